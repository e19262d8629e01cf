//! `credgate webhook`'s answer to one AdmissionReview (v1): the same
//! mutation as `credgate inject`, given back as a JSONPatch.
//!
//! Every answer is an AdmissionReview the API server can read, whatever it
//! was sent: a pod credgate cannot make safe is denied with the reason, and
//! so is a review that cannot be read (with `uid` when it has one). What is
//! not a workload, or already has credgate, is allowed unchanged.
//!
//! An update is never mutated (a running pod's containers cannot be
//! added to). An update of an injected pod must leave it injected exactly
//! as before: otherwise changing the image of credgate's sidecar, which
//! the lock-down exempts, would let anything out. An update of a pod that
//! was never injected (it ran before the webhook) is allowed unchanged.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::inject::{inject_object, InjectOptions, Outcome, INJECTED_ANNOTATION};

/// The answer to the AdmissionReview `body`, itself an AdmissionReview.
pub fn answer(body: &[u8], options: &InjectOptions) -> Value {
    let review: Value = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => return deny("", format!("the request is not JSON: {e}")),
    };
    let request = &review["request"];
    let uid = request["uid"].as_str().unwrap_or_default();
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return deny(
            uid,
            "not an admission.k8s.io/v1 AdmissionReview (the webhook configuration must \
             list admissionReviewVersions: [v1])"
                .into(),
        );
    }
    if uid.is_empty() {
        return deny(uid, "the AdmissionReview has no request.uid".into());
    }
    let object = &request["object"];
    if !object.is_object() {
        return deny(uid, "the AdmissionReview has no request.object".into());
    }
    let yaml = match serde_yaml::to_value(object) {
        Ok(yaml) => yaml,
        Err(e) => return deny(uid, format!("request.object cannot be read: {e}")),
    };
    let mut notes = Vec::new();
    if request["operation"] == "UPDATE" {
        let injected =
            |object: &Value| object["metadata"]["annotations"][INJECTED_ANNOTATION] == "true";
        if !injected(&request["oldObject"]) {
            return allow(uid, None);
        }
        if !injected(object) {
            return deny(
                uid,
                format!("an update may not take the {INJECTED_ANNOTATION} annotation away"),
            );
        }
        // Annotated, it is checked and never injected again.
        return match inject_object(&yaml, options, &mut notes) {
            Ok(_) => allow(uid, None),
            Err(reason) => deny(
                uid,
                format!("this update would leave the pod unsafe: {reason}"),
            ),
        };
    }
    match inject_object(&yaml, options, &mut notes) {
        Err(reason) => deny(uid, format!("credgate cannot make this pod safe: {reason}")),
        Ok(Outcome::AlreadyInjected | Outcome::NotAWorkload) => allow(uid, None),
        Ok(Outcome::Injected(injected)) => match serde_json::to_value(&injected) {
            Ok(after) => allow(uid, Some(json_patch(object, &after))),
            Err(e) => deny(uid, format!("the injected object cannot be written: {e}")),
        },
    }
}

/// The answer to a review that could not even be read (too large, cut
/// short): denied, saying why.
pub fn unreadable(why: &str) -> Value {
    deny("", format!("the AdmissionReview could not be read: {why}"))
}

fn allow(uid: &str, patch: Option<Vec<Value>>) -> Value {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        let patch = serde_json::to_vec(&patch).expect("JSON serialises");
        response["patchType"] = "JSONPatch".into();
        response["patch"] = base64::engine::general_purpose::STANDARD
            .encode(patch)
            .into();
    }
    review(response)
}

fn deny(uid: &str, message: String) -> Value {
    review(json!({
        "uid": uid,
        "allowed": false,
        "status": { "code": 403, "reason": "Forbidden", "message": message },
    }))
}

fn review(response: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

/// The RFC 6902 operations that turn `before` into `after`: objects are
/// compared key by key, lists of the same length item by item, and
/// anything else that differs is replaced whole.
pub fn json_patch(before: &Value, after: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    diff(&mut String::new(), before, after, &mut ops);
    ops
}

fn diff(path: &mut String, before: &Value, after: &Value, ops: &mut Vec<Value>) {
    if before == after {
        return;
    }
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => diff_objects(path, a, b, ops),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                diff(path, x, y, ops);
                path.truncate(len);
            }
        }
        _ => ops.push(json!({ "op": "replace", "path": path.as_str(), "value": after })),
    }
}

fn diff_objects(
    path: &mut String,
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    ops: &mut Vec<Value>,
) {
    for (key, old) in before {
        let len = path.len();
        push_token(path, key);
        match after.get(key) {
            None => ops.push(json!({ "op": "remove", "path": path.as_str() })),
            Some(new) => diff(path, old, new, ops),
        }
        path.truncate(len);
    }
    for (key, new) in after {
        if !before.contains_key(key) {
            let len = path.len();
            push_token(path, key);
            ops.push(json!({ "op": "add", "path": path.as_str(), "value": new }));
            path.truncate(len);
        }
    }
}

/// `/key`, escaped as a JSON Pointer token: `~` is `~0` and `/` is `~1`
/// (`credgate.dev/injected` is `credgate.dev~1injected`).
fn push_token(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small RFC 6902 applier for the operations [`json_patch`] emits;
    /// the integration test applies them with Python's `jsonpatch` too.
    fn apply(doc: &mut Value, ops: &[Value]) {
        for op in ops {
            let path = op["path"].as_str().unwrap();
            let (parent, last) = match path.rfind('/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => {
                    *doc = op["value"].clone();
                    continue;
                }
            };
            let last = last.replace("~1", "/").replace("~0", "~");
            let target = doc.pointer_mut(parent).unwrap();
            match (op["op"].as_str().unwrap(), target) {
                ("remove", Value::Object(m)) => {
                    m.remove(&last).unwrap();
                }
                ("add" | "replace", Value::Object(m)) => {
                    m.insert(last, op["value"].clone());
                }
                ("replace", Value::Array(a)) => {
                    a[last.parse::<usize>().unwrap()] = op["value"].clone()
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn a_patch_turns_the_one_into_the_other() {
        let before = json!({
            "a": 1, "gone": true, "list": [1, {"x": 1}], "short": [1],
            "meta": { "annotations": { "keep": "k" } }, "same": { "b": [1, 2] },
        });
        let after = json!({
            "a": 2, "list": [1, {"x": 2, "y": 3}], "short": [1, 2], "new": { "z": null },
            "meta": { "annotations": { "keep": "k", "credgate.dev/injected": "true", "a~b": "c" } },
            "same": { "b": [1, 2] },
        });
        let ops = json_patch(&before, &after);
        let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
        assert!(
            paths.contains(&"/meta/annotations/credgate.dev~1injected"),
            "{paths:?}"
        );
        assert!(paths.contains(&"/meta/annotations/a~0b"), "{paths:?}");
        assert!(
            paths.contains(&"/list/1/x") && paths.contains(&"/short"),
            "{paths:?}"
        );
        assert!(!paths.iter().any(|p| p.starts_with("/same")), "{paths:?}");
        let mut patched = before.clone();
        apply(&mut patched, &ops);
        assert_eq!(patched, after);
        assert!(json_patch(&after, &after).is_empty());
    }

    fn pod(user: u64) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "generateName": "agent-" },
            "spec": { "containers": [{ "name": "agent", "image": "a",
                "securityContext": { "runAsUser": user } }] },
        })
    }

    fn ask(object: Value) -> Value {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": { "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "operation": "CREATE",
                "object": object },
        });
        answer(
            &serde_json::to_vec(&review).unwrap(),
            &InjectOptions::default(),
        )
    }

    #[test]
    fn a_pod_gets_the_patch_that_inject_would_make() {
        let answer = ask(pod(1000));
        let response = &answer["response"];
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
        let mut patched = pod(1000);
        apply(&mut patched, &ops);
        let yaml = serde_yaml::to_value(pod(1000)).unwrap();
        let Ok(Outcome::Injected(injected)) =
            inject_object(&yaml, &InjectOptions::default(), &mut Vec::new())
        else {
            panic!("not injected");
        };
        assert_eq!(patched, serde_json::to_value(injected).unwrap());
        // Injected, it is allowed as it is.
        let again = ask(patched);
        assert_eq!(again["response"]["allowed"], true);
        assert!(again["response"]["patch"].is_null());
    }

    fn ask_update(old: &Value, new: &Value) -> Value {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": { "uid": "u-1", "operation": "UPDATE", "object": new, "oldObject": old },
        });
        answer(
            &serde_json::to_vec(&review).unwrap(),
            &InjectOptions::default(),
        )
    }

    #[test]
    fn an_update_must_leave_an_injected_pod_as_injected_and_is_never_mutated() {
        let yaml = serde_yaml::to_value(pod(1000)).unwrap();
        let Ok(Outcome::Injected(injected)) =
            inject_object(&yaml, &InjectOptions::default(), &mut Vec::new())
        else {
            panic!("not injected");
        };
        let injected = serde_json::to_value(injected).unwrap();
        // A label: allowed, unchanged.
        let mut labelled = injected.clone();
        labelled["metadata"]["labels"] = json!({ "team": "a" });
        let answer = ask_update(&injected, &labelled);
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(answer["response"]["patch"].is_null());
        // The sidecar's image, or the annotation taken away: denied.
        let mut swapped = injected.clone();
        swapped["spec"]["initContainers"][1]["image"] = "evil:latest".into();
        let mut unannotated = injected.clone();
        unannotated["metadata"]["annotations"] = json!({});
        for (new, says) in [
            (swapped, "not the credgate container"),
            (
                unannotated,
                "may not take the credgate.dev/injected annotation away",
            ),
        ] {
            let answer = ask_update(&injected, &new);
            assert_eq!(answer["response"]["allowed"], false, "{answer}");
            let message = answer["response"]["status"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{message}");
        }
        // A pod from before the webhook: allowed, not patched.
        let answer = ask_update(&pod(0), &pod(0));
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"]["patch"].is_null());
    }

    #[test]
    fn what_cannot_be_made_safe_or_read_is_denied_with_a_reason() {
        let root = ask(pod(0));
        assert_eq!(root["response"]["allowed"], false);
        assert_eq!(
            root["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        let message = root["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("runs as root"), "{message}");
        let options = InjectOptions::default();
        for (body, says) in [
            (&b"not json"[..], "not JSON"),
            (b"[]", "not an admission.k8s.io/v1 AdmissionReview"),
            (br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#, "admissionReviewVersions"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#, "no request.uid"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":7}}"#, "no request.object"),
        ] {
            let answer = answer(body, &options);
            assert_eq!(answer["kind"], "AdmissionReview");
            assert_eq!(answer["response"]["allowed"], false, "{answer}");
            let message = answer["response"]["status"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{message}");
        }
        // Not a workload: allowed unchanged.
        let service =
            ask(json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "s" } }));
        assert_eq!(service["response"]["allowed"], true);
        assert!(service["response"]["patch"].is_null());
    }
}
