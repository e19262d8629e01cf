// An untouched Java agent: a GET with java.net.http.HttpClient or
// javax.net.ssl.HttpsURLConnection, configured by nothing but what the JVM
// reads by itself (here JAVA_TOOL_OPTIONS, set by `credgate run`).
//
// Usage: java -cp DIR JavaGet httpclient|urlconnection URL [HEADER:VALUE ...]
// Prints the status on the first line, then the body.

import java.io.InputStream;
import java.net.URI;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import javax.net.ssl.HttpsURLConnection;

public class JavaGet {
    public static void main(String[] args) throws Exception {
        String client = args[0];
        String url = args[1];
        int status;
        String body;
        if (client.equals("httpclient")) {
            HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url))
                    .timeout(Duration.ofSeconds(20));
            for (int i = 2; i < args.length; i++) {
                String[] header = args[i].split(":", 2);
                request.header(header[0].trim(), header[1].trim());
            }
            HttpResponse<String> response = HttpClient.newHttpClient()
                    .send(request.build(), HttpResponse.BodyHandlers.ofString());
            status = response.statusCode();
            body = response.body();
        } else {
            HttpsURLConnection connection = (HttpsURLConnection) new URL(url).openConnection();
            connection.setConnectTimeout(20_000);
            connection.setReadTimeout(20_000);
            for (int i = 2; i < args.length; i++) {
                String[] header = args[i].split(":", 2);
                connection.setRequestProperty(header[0].trim(), header[1].trim());
            }
            status = connection.getResponseCode();
            InputStream stream = status < 400 ? connection.getInputStream() : connection.getErrorStream();
            body = stream == null ? "" : new String(stream.readAllBytes(), StandardCharsets.UTF_8);
        }
        System.out.println(status);
        System.out.print(body);
    }
}
