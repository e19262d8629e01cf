use super::*;

const GH: &str = "ghp_t3stsecrett3stsecrett3stsecrett3stsecret";
const ANT: &str = "sk-ant-api03-Test-Secret-0000000000";

fn pem() -> String {
    format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
        "TUlJQ1h0ZXN0LXNlY3JldC1ub3QtYS1rZXk".repeat(4)
    )
}

/// The secret forms the buffered scan reads, each as it appears in a body.
fn secret_forms() -> Vec<(String, &'static str)> {
    vec![
        (GH.to_string(), "github_token"),
        (ANT.replace('-', "%2D"), "anthropic_api_key"),
        (ANT.replacen('a', r"\u0061", 2), "anthropic_api_key"),
        (pem(), "private_key"),
        ("AKIAT3STSECRET000000".to_string(), "aws_access_key_id"),
    ]
}

fn body_with(secret: &str) -> Vec<u8> {
    format!(r#"{{"note":"ordinary text, 100% fine","data":"{secret}","tail":[1,2,3]}}"#)
        .into_bytes()
}

/// Feeds `body` in pieces cut at `cuts`; returns what was passed on, and
/// the outcome.
fn feed(strip: bool, body: &[u8], cuts: &[usize]) -> (Vec<u8>, Result<(), BodyStopped>) {
    let mut scan = BodyStreamScan::new(strip);
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        match scan.push(&body[from..cut]) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(stop) => return (out, Err(stop)),
        }
        from = cut;
    }
    match scan.finish() {
        Ok(bytes) => out.extend_from_slice(&bytes),
        Err(stop) => return (out, Err(stop)),
    }
    (out, Ok(()))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_secret_split_anywhere_stops_the_body_before_it_has_all_gone_on() {
    for (secret, rule) in secret_forms() {
        let body = body_with(&secret);
        let start = body.len() - secret.len() - 20;
        for cut in 0..=body.len() {
            for cuts in [vec![cut], vec![start.min(cut), cut]] {
                let (out, outcome) = feed(false, &body, &cuts);
                let stop = outcome.expect_err(&secret);
                assert_eq!(stop.findings.len(), 1);
                assert_eq!(stop.findings[0].rule, rule, "{secret} cut at {cuts:?}");
                assert!(
                    !contains(&out, secret.as_bytes()),
                    "{secret} cut at {cuts:?}"
                );
            }
        }
    }
}

#[test]
fn under_a_stripping_rule_the_secret_is_masked_wherever_it_was_cut() {
    for (secret, _) in secret_forms() {
        let body = body_with(&secret);
        let from = body
            .windows(secret.len())
            .position(|w| w == secret.as_bytes())
            .unwrap();
        let mut expected = body.clone();
        expected[from..from + secret.len()].fill(b'*');
        for cut in 0..=body.len() {
            let (out, outcome) = feed(true, &body, &[cut]);
            outcome.unwrap();
            assert_eq!(out.len(), body.len());
            // The secret's bytes are masked, and only those.
            assert!(out == expected, "{secret} cut at {cut}");
        }
    }
}

#[test]
fn ordinary_lines_go_on_at_once() {
    let mut scan = BodyStreamScan::new(false);
    for i in 0..100 {
        let line = format!("{{\"event\":{i},\"text\":\"token-list and disk-usage\"}}\n");
        let out = scan.push(line.as_bytes()).unwrap();
        assert_eq!(out, line.as_bytes(), "line {i} was held back");
    }
    assert!(scan.finish().unwrap().is_empty());
}

#[test]
fn a_long_run_of_token_characters_is_held_only_at_its_end() {
    let mut scan = BodyStreamScan::new(false);
    let run = vec![b'Q'; 100 * 1024];
    let out = scan.push(&run).unwrap();
    assert_eq!(out.len(), run.len() - MAX_HOLD);
    assert_eq!(scan.finish().unwrap().len(), MAX_HOLD);
}

#[test]
fn binary_data_flows_and_is_passed_on_unchanged() {
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cuts: Vec<usize> = (1..data.len()).step_by(16 * 1024 + 7).collect();
    let (out, outcome) = feed(false, &data, &cuts);
    outcome.unwrap();
    assert_eq!(out, data);
}

#[test]
fn a_match_open_too_long_stops_the_body_even_when_stripping() {
    let mut scan = BodyStreamScan::new(true);
    scan.push(b"{\"k\":\"-----BEGIN RSA PRIVATE KEY-----\n")
        .unwrap();
    let mut stopped = None;
    for _ in 0..20 {
        if let Err(stop) = scan.push(&[b'A'; 8 * 1024]) {
            stopped = Some(stop);
            break;
        }
    }
    let stop = stopped.expect("a key block without an end is not held forever");
    assert!(stop.open_too_long);
    assert_eq!(stop.findings[0].rule, "private_key");
}

#[test]
fn a_key_id_shape_cut_at_its_length_is_not_a_finding_when_it_goes_on() {
    // AKIA + 16 is a key id only when no letter or digit follows.
    let body = b"{\"id\":\"AKIAT3STSECRET000000X\"}";
    for cut in 0..=body.len() {
        let (out, outcome) = feed(false, body, &[cut]);
        outcome.unwrap();
        assert_eq!(out, body);
    }
}
