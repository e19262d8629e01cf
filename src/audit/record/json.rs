//! A record as one line of JSON, written by hand for the writer thread.

use super::*;

impl DecisionRecord {
    /// Appends the record as one line of JSON, newline included: exactly the
    /// bytes `serde_json::to_writer` writes for it, followed by `\n`.
    ///
    /// Written by hand because the writer thread encodes every record: the
    /// field names are constants that need no escaping, and most values
    /// need none either, which a generic serializer cannot know.
    ///
    /// The labels and the credential are taken from `shared` when they are
    /// the same shared values as in the previous record written with it.
    pub(crate) fn write_json_line(&self, out: &mut Vec<u8>, shared: &mut SharedJson) {
        out.extend_from_slice(b"{\"ts\":");
        json_str(out, &self.ts);
        out.extend_from_slice(b",\"id\":");
        json_str(out, &self.id);
        out.extend_from_slice(b",\"event\":\"");
        out.extend_from_slice(self.event.as_str().as_bytes());
        out.extend_from_slice(b"\",\"task\":");
        json_opt_str(out, self.task.as_deref());
        out.extend_from_slice(b",\"agent\":");
        json_opt_str(out, self.agent.as_deref());
        out.extend_from_slice(b",\"labels\":");
        out.extend_from_slice(SharedJson::encoded(
            &mut shared.labels,
            &self.labels,
            json_labels,
        ));
        out.extend_from_slice(b",\"method\":");
        json_opt_str(out, self.method.as_deref());
        out.extend_from_slice(b",\"scheme\":");
        json_opt_str(out, self.scheme.as_deref());
        out.extend_from_slice(b",\"host\":");
        json_opt_str(out, self.host.as_deref());
        out.extend_from_slice(b",\"port\":");
        json_opt_u64(out, self.port.map(u64::from));
        out.extend_from_slice(b",\"path\":");
        json_opt_str(out, self.path.as_deref());
        out.extend_from_slice(b",\"decision\":");
        json_opt_str(out, self.decision.map(Verdict::as_str));
        out.extend_from_slice(b",\"rule\":");
        json_opt_str(out, self.rule.as_deref());
        out.extend_from_slice(b",\"reason\":");
        json_opt_str(out, self.reason.map(Reason::as_str));
        if let Some(message) = &self.message {
            out.extend_from_slice(b",\"message\":");
            json_str(out, message);
        }
        out.extend_from_slice(b",\"stripped\":");
        json_str_list(out, &self.stripped);
        out.extend_from_slice(b",\"findings\":");
        json_str_list(out, &self.findings);
        out.extend_from_slice(b",\"credential\":");
        match &self.credential {
            None => out.extend_from_slice(b"null"),
            Some(c) => out.extend_from_slice(SharedJson::encoded(
                &mut shared.credential,
                c,
                json_credential,
            )),
        }
        out.extend_from_slice(b",\"upstream\":");
        match &self.upstream {
            None => out.extend_from_slice(b"null"),
            Some(u) => {
                out.extend_from_slice(b"{\"status\":");
                json_opt_u64(out, u.status.map(u64::from));
                out.extend_from_slice(b",\"ms\":");
                json_opt_u64(out, u.ms);
                out.push(b'}');
            }
        }
        out.extend_from_slice(b",\"tunnel\":");
        json_bool(out, self.tunnel);
        out.extend_from_slice(b",\"bytes_in\":");
        json_u64(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        json_u64(out, self.bytes_out);
        out.extend_from_slice(b",\"scrubbed\":");
        json_u64(out, self.scrubbed);
        if let Some(ws) = &self.websocket {
            out.extend_from_slice(b",\"websocket\":{\"frames_in\":");
            json_u64(out, ws.frames_in);
            out.extend_from_slice(b",\"frames_out\":");
            json_u64(out, ws.frames_out);
            out.extend_from_slice(b",\"bytes_in\":");
            json_u64(out, ws.bytes_in);
            out.extend_from_slice(b",\"bytes_out\":");
            json_u64(out, ws.bytes_out);
            out.extend_from_slice(b",\"close_code\":");
            json_opt_u64(out, ws.close_code.map(u64::from));
            out.push(b'}');
        }
        if let Some(approval) = &self.approval {
            out.extend_from_slice(b",\"approval\":{\"id\":");
            json_str(out, &approval.id);
            out.extend_from_slice(b",\"state\":");
            json_str(out, &approval.state);
            out.extend_from_slice(b",\"approvers\":");
            json_str_list(out, &approval.approvers);
            if let Some(grant) = &approval.grant {
                out.extend_from_slice(b",\"grant\":");
                json_str(out, grant);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"duration_ms\":");
        json_u64(out, self.duration_ms);
        out.extend_from_slice(b"}\n");
    }
}

/// The encodings of the last labels and credential written, kept while the
/// next record shares the same values (every request of a task shares its
/// labels, every cache hit the credential's description). Holding the `Arc`
/// keeps its address from being reused by another value, so pointer
/// equality means the same contents.
#[derive(Default)]
pub(crate) struct SharedJson {
    labels: Held<BTreeMap<String, String>>,
    credential: Held<CredentialInfo>,
}

/// A shared value and its encoding.
type Held<T> = Option<(Arc<T>, Vec<u8>)>;

impl SharedJson {
    /// The encoding of `value`, from `slot` when it holds the same `Arc`.
    fn encoded<'a, T>(
        slot: &'a mut Held<T>,
        value: &Arc<T>,
        encode: fn(&mut Vec<u8>, &T),
    ) -> &'a [u8] {
        if !slot
            .as_ref()
            .is_some_and(|(held, _)| Arc::ptr_eq(held, value))
        {
            let mut bytes = Vec::new();
            encode(&mut bytes, value);
            *slot = Some((Arc::clone(value), bytes));
        }
        slot.as_ref().map_or(&[], |(_, bytes)| bytes)
    }
}

pub(super) fn json_labels(out: &mut Vec<u8>, labels: &BTreeMap<String, String>) {
    out.push(b'{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, key);
        out.push(b':');
        json_str(out, value);
    }
    out.push(b'}');
}

pub(super) fn json_credential(out: &mut Vec<u8>, c: &CredentialInfo) {
    out.extend_from_slice(b"{\"source\":");
    json_str(out, &c.source);
    out.extend_from_slice(b",\"name\":");
    json_str(out, &c.name);
    out.extend_from_slice(b",\"id\":");
    json_str(out, &c.id);
    out.extend_from_slice(b",\"fingerprint\":");
    json_str(out, &c.fingerprint);
    out.extend_from_slice(b",\"expires_at\":");
    json_opt_str(out, c.expires_at.as_deref());
    if let Some(cache) = c.cache {
        out.extend_from_slice(match cache {
            CacheOutcome::Hit => b",\"cache\":\"hit\"".as_slice(),
            CacheOutcome::Miss => b",\"cache\":\"miss\"".as_slice(),
        });
    }
    out.extend_from_slice(b",\"standing\":");
    json_bool(out, c.standing);
    out.push(b'}');
}

/// A JSON string, escaped the way serde_json escapes: `"`, `\\`, and the
/// control characters below U+0020 (short forms where JSON has them,
/// `\u00xx` otherwise). Everything else, non-ASCII included, is copied.
pub(super) fn json_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Almost every value (ids, names, hosts, paths) needs no escape at all.
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any byte is `"`, `\\` or below U+0020; eight bytes per step.
pub(super) fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    // High bit of a byte set when that byte of `x` is zero (exact as a
    // yes/no over the word).
    fn zero_byte(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGH
    }
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let quote = zero_byte(x ^ (ONES * u64::from(b'"')));
        let backslash = zero_byte(x ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

pub(super) fn json_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => json_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

pub(super) fn json_str_list(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, item);
    }
    out.push(b']');
}

pub(super) fn json_u64(out: &mut Vec<u8>, value: u64) {
    // Most counters of a record (bytes in, scrubbed, milliseconds) are 0-9.
    if value < 10 {
        out.push(b'0' + value as u8);
    } else {
        out.extend_from_slice(Decimal::new(value).as_bytes());
    }
}

pub(super) fn json_opt_u64(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(value) => json_u64(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

pub(super) fn json_bool(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}
