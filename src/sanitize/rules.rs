//! The secret detection rules: which byte patterns are treated as a credential
//! the agent must not send.
//!
//! No regular expressions: one Aho-Corasick automaton finds the fixed prefixes
//! (`AKIA`, `ghp_`, `sk-`, `eyJ`, ...) and a hand-written validator per rule
//! checks charset, length and structure after the prefix. Every prefix must
//! sit on a token boundary — the byte before it is not an ASCII letter or
//! digit — so `task-list`, `disk-usage` or `monkeyJump` never start a match.
//!
//! The scan is linear in the input even for adversarial input: a validator
//! that fails on a run of token characters remembers where that run ended, and
//! later candidates of the same rule inside the run are rejected without
//! re-reading it (a suffix of a run that fails a length/charset test fails it
//! too).

use std::ops::Range;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, Input, MatchKind};

/// One detection rule. The id ([`Rule::id`]) is stable and appears in decision
/// records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Rule {
    /// `AKIA` or `ASIA`, then exactly 16 of `[A-Z0-9]`, then no further letter
    /// or digit.
    AwsAccessKeyId,
    /// `ghp_`, `gho_`, `ghu_`, `ghs_` or `ghr_` then 36 or more of
    /// `[A-Za-z0-9]`; or `github_pat_` then 22 or more of `[A-Za-z0-9_]`.
    GithubToken,
    /// `xoxa-`, `xoxb-`, `xoxp-`, `xoxo-`, `xoxs-` or `xoxr-` then 10 or more of
    /// `[A-Za-z0-9-]` containing at least one digit.
    SlackToken,
    /// `sk-` then 20 or more of `[A-Za-z0-9_-]` containing at least one
    /// uppercase letter, one lowercase letter and one digit (random keys,
    /// including `sk-proj-...`, always do; kebab-case prose such as
    /// `sk-learn-is-a-python-library` does not).
    OpenaiApiKey,
    /// `sk-ant-` then 20 or more of `[A-Za-z0-9_-]`.
    AnthropicApiKey,
    /// `-----BEGIN `, a label of at most 64 of `[A-Z0-9 ]` ending in
    /// `PRIVATE KEY` or `PRIVATE KEY BLOCK`, then `-----`. The match extends to
    /// the end of the following `-----END ...-----` line, or to the end of the
    /// input when there is none (everything after the header may be key
    /// material).
    PrivateKey,
    /// A JSON Web Token: `eyJ` + `[A-Za-z0-9_-]*` (header) `.` `eyJ` +
    /// `[A-Za-z0-9_-]*` (payload) `.` `[A-Za-z0-9_-]*` (signature), where the
    /// header and payload have a valid unpadded base64 length and their last
    /// decoded byte is `}` (with `eyJ` = `{"`, both decode to the shape of a
    /// JSON object).
    Jwt,
    /// A query parameter whose name (percent-decoded, case-insensitive) is one
    /// of `token`, `access_token`, `api_key`, `apikey`, `api-key`, `password`,
    /// `passwd`, `secret`, `client_secret`, `auth`, `private_token`,
    /// `refresh_token`, `id_token`, with a non-empty value. URLs only.
    SecretQueryParam,
    /// A credgate task token: `cgt_` then 32 or more of `[A-Za-z0-9_-]`. The
    /// agent holds one; sending it anywhere but to credgate is a leak.
    CredgateTaskToken,
}

impl Rule {
    /// Every rule, in the order findings are reported.
    pub(crate) const ALL: [Rule; 9] = [
        Rule::AwsAccessKeyId,
        Rule::GithubToken,
        Rule::SlackToken,
        Rule::OpenaiApiKey,
        Rule::AnthropicApiKey,
        Rule::PrivateKey,
        Rule::Jwt,
        Rule::SecretQueryParam,
        Rule::CredgateTaskToken,
    ];

    /// The stable id used in findings and decision records.
    pub(crate) const fn id(self) -> &'static str {
        match self {
            Rule::AwsAccessKeyId => "aws_access_key_id",
            Rule::GithubToken => "github_token",
            Rule::SlackToken => "slack_token",
            Rule::OpenaiApiKey => "openai_api_key",
            Rule::AnthropicApiKey => "anthropic_api_key",
            Rule::PrivateKey => "private_key",
            Rule::Jwt => "jwt",
            Rule::SecretQueryParam => "secret_query_param",
            Rule::CredgateTaskToken => "credgate_task_token",
        }
    }
}

/// A small set of rules, so repeated hits of one rule cost nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RuleSet(u16);

impl RuleSet {
    /// Adds `rule`.
    pub(crate) fn insert(&mut self, rule: Rule) {
        self.0 |= 1 << rule as u16;
    }

    /// Adds every rule of `other`.
    pub(crate) fn extend(&mut self, other: RuleSet) {
        self.0 |= other.0;
    }

    /// `true` when no rule is in the set.
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The rules in the set, in [`Rule::ALL`] order.
    pub(crate) fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL
            .into_iter()
            .filter(move |rule| self.0 & (1 << *rule as u16) != 0)
    }
}

/// Which validator a prefix hands over to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Aws,
    GithubClassic,
    GithubPat,
    Slack,
    Anthropic,
    Openai,
    PrivateKey,
    Jwt,
    TaskToken,
}

const KINDS: usize = 9;

const PREFIXES: &[(&str, Kind)] = &[
    ("AKIA", Kind::Aws),
    ("ASIA", Kind::Aws),
    ("ghp_", Kind::GithubClassic),
    ("gho_", Kind::GithubClassic),
    ("ghu_", Kind::GithubClassic),
    ("ghs_", Kind::GithubClassic),
    ("ghr_", Kind::GithubClassic),
    ("github_pat_", Kind::GithubPat),
    ("xoxa-", Kind::Slack),
    ("xoxb-", Kind::Slack),
    ("xoxp-", Kind::Slack),
    ("xoxo-", Kind::Slack),
    ("xoxs-", Kind::Slack),
    ("xoxr-", Kind::Slack),
    ("sk-ant-", Kind::Anthropic),
    ("sk-", Kind::Openai),
    ("-----BEGIN ", Kind::PrivateKey),
    ("eyJ", Kind::Jwt),
    ("cgt_", Kind::TaskToken),
];

/// Leftmost-longest, so `sk-ant-` wins over `sk-` at the same position.
static PREFIX_AUTOMATON: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(PREFIXES.iter().map(|(prefix, _)| prefix))
        .expect("the fixed prefix set is a valid automaton")
});

/// Up to this length a haystack is checked with [`may_hold_prefix`] before
/// it is searched; a longer one (a body) is searched at once, since the
/// search's vectorised prefilter outruns the byte-pair check there.
const SHORT_HAY: usize = 512;

/// Whether `hay` has, anywhere, the first two bytes of one of [`PREFIXES`]:
/// a check much cheaper than a search for a short string, which most header
/// names and values fail, so the search is skipped.
fn may_hold_prefix(hay: &[u8]) -> bool {
    hay.len() > SHORT_HAY
        || hay.windows(2).any(|pair| {
            matches!(
                (pair[0], pair[1]),
                (b'A', b'K' | b'S')
                    | (b'g', b'h' | b'i')
                    | (b'x', b'o')
                    | (b's', b'k')
                    | (b'-', b'-')
                    | (b'e', b'y')
                    | (b'c', b'g')
            )
        })
}

/// Calls `on_match` with the rule and byte range of every secret in `hay`,
/// left to right, without overlaps.
pub(crate) fn scan(hay: &[u8], mut on_match: impl FnMut(Rule, Range<usize>)) {
    if !may_hold_prefix(hay) {
        return;
    }
    let automaton = &*PREFIX_AUTOMATON;
    let mut state = ScanState::default();
    let mut pos = 0;
    while pos < hay.len() {
        let Some(found) = automaton.find(Input::new(hay).range(pos..)) else {
            break;
        };
        let start = found.start();
        let kind = PREFIXES[found.pattern().as_usize()].1;
        let on_boundary = start == 0 || !hay[start - 1].is_ascii_alphanumeric();
        match on_boundary
            .then(|| state.validate(kind, hay, start))
            .flatten()
        {
            Some((rule, end)) => {
                on_match(rule, start..end);
                pos = end;
            }
            None => pos = start + 1,
        }
    }
}

/// The rules that fire anywhere in `hay`.
pub(crate) fn rules_in(hay: &[u8]) -> RuleSet {
    let mut set = RuleSet::default();
    scan(hay, |rule, _| set.insert(rule));
    set
}

/// The byte ranges of every secret in `hay`.
pub(crate) fn spans_in(hay: &[u8]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    scan(hay, |_, span| spans.push(span));
    spans
}

/// Memory that keeps one scan linear (see the module documentation).
#[derive(Default)]
struct ScanState {
    /// Candidates of a kind starting before this offset are known to fail.
    fail_until: [usize; KINDS],
    /// The last JWT header run computed: any start in `from..=end` ends at `end`.
    jwt_header: Option<(usize, usize)>,
    /// The last JWT tail (payload + signature) checked, keyed by header end.
    jwt_tail: Option<(usize, Option<usize>)>,
}

impl ScanState {
    fn validate(&mut self, kind: Kind, hay: &[u8], start: usize) -> Option<(Rule, usize)> {
        if start < self.fail_until[kind as usize] {
            return None;
        }
        match kind {
            Kind::Aws => aws(hay, start).map(|end| (Rule::AwsAccessKeyId, end)),
            Kind::GithubClassic => self
                .token_run(kind, hay, start + 4, is_alnum, |run| run.len() >= 36)
                .map(|end| (Rule::GithubToken, end)),
            Kind::GithubPat => self
                .token_run(kind, hay, start + 11, is_pat_char, |run| run.len() >= 22)
                .map(|end| (Rule::GithubToken, end)),
            Kind::Slack => self
                .token_run(kind, hay, start + 5, is_slack_char, |run| {
                    run.len() >= 10 && run.iter().any(u8::is_ascii_digit)
                })
                .map(|end| (Rule::SlackToken, end)),
            Kind::Anthropic => self
                .token_run(kind, hay, start + 7, is_key_char, |run| run.len() >= 20)
                .map(|end| (Rule::AnthropicApiKey, end))
                .or_else(|| self.validate(Kind::Openai, hay, start)),
            Kind::Openai => self
                .token_run(kind, hay, start + 3, is_key_char, looks_random)
                .map(|end| (Rule::OpenaiApiKey, end)),
            Kind::PrivateKey => private_key(hay, start).map(|end| (Rule::PrivateKey, end)),
            Kind::Jwt => self.jwt(hay, start).map(|end| (Rule::Jwt, end)),
            Kind::TaskToken => self
                .token_run(kind, hay, start + 4, is_key_char, |run| run.len() >= 32)
                .map(|end| (Rule::CredgateTaskToken, end)),
        }
    }

    /// The end of the run of `class` bytes from `from` when `accept` takes it;
    /// otherwise remembers that candidates of `kind` inside the run fail too.
    fn token_run(
        &mut self,
        kind: Kind,
        hay: &[u8],
        from: usize,
        class: fn(u8) -> bool,
        accept: impl Fn(&[u8]) -> bool,
    ) -> Option<usize> {
        let end = run_end(hay, from, class);
        if accept(&hay[from..end]) {
            Some(end)
        } else {
            self.fail_until[kind as usize] = end;
            None
        }
    }

    fn jwt(&mut self, hay: &[u8], start: usize) -> Option<usize> {
        let header_end = match self.jwt_header {
            Some((from, end)) if (from..=end).contains(&start) => end,
            _ => run_end(hay, start, is_key_char),
        };
        self.jwt_header = Some((start, header_end));
        let tail = match self.jwt_tail {
            Some((key, tail)) if key == header_end => tail,
            _ => jwt_tail(hay, header_end),
        };
        self.jwt_tail = Some((header_end, tail));
        let Some(end) = tail else {
            // Every candidate inside this header run shares the broken tail.
            self.fail_until[Kind::Jwt as usize] = header_end;
            return None;
        };
        decodes_to_object_end(&hay[start..header_end]).then_some(end)
    }
}

fn aws(hay: &[u8], start: usize) -> Option<usize> {
    let end = start + 20;
    let body = hay.get(start + 4..end)?;
    let upper_or_digit = |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let closed = hay.get(end).is_none_or(|b| !b.is_ascii_alphanumeric());
    (body.iter().all(upper_or_digit) && closed).then_some(end)
}

/// The payload and signature after a JWT header ending at `header_end`; the
/// end of the token when they have the right shape.
fn jwt_tail(hay: &[u8], header_end: usize) -> Option<usize> {
    if hay.get(header_end) != Some(&b'.') {
        return None;
    }
    let payload = header_end + 1;
    if !hay[payload..].starts_with(b"eyJ") {
        return None;
    }
    let payload_end = run_end(hay, payload, is_key_char);
    if hay.get(payload_end) != Some(&b'.') || !decodes_to_object_end(&hay[payload..payload_end]) {
        return None;
    }
    Some(run_end(hay, payload_end + 1, is_key_char))
}

/// Whether unpadded base64url `part` has a valid length and its last decoded
/// byte is `}`. Only the final quantum is decoded, so this costs O(1).
fn decodes_to_object_end(part: &[u8]) -> bool {
    let sextet = |b: u8| -> u8 {
        match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            _ => 63,
        }
    };
    let n = part.len();
    let last = match n % 4 {
        0 if n >= 4 => (sextet(part[n - 2]) & 0b11) << 6 | sextet(part[n - 1]),
        2 => sextet(part[n - 2]) << 2 | sextet(part[n - 1]) >> 4,
        3 => (sextet(part[n - 2]) & 0b1111) << 4 | sextet(part[n - 1]) >> 2,
        _ => return false,
    };
    last == b'}'
}

fn private_key(hay: &[u8], start: usize) -> Option<usize> {
    const MAX_LABEL: usize = 64;
    let label_start = start + "-----BEGIN ".len();
    let label_len = hay[label_start..]
        .iter()
        .take(MAX_LABEL + 1)
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b' ')
        .count();
    let label = &hay[label_start..label_start + label_len];
    let after_label = label_start + label_len;
    let is_key_label = label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK");
    if label_len > MAX_LABEL || !is_key_label || !hay[after_label..].starts_with(b"-----") {
        return None;
    }
    let body = after_label + 5;
    let Some(end_marker) = find(hay, b"-----END ", body) else {
        return Some(hay.len());
    };
    let close_from = end_marker + "-----END ".len();
    let close_window = &hay[close_from..hay.len().min(close_from + MAX_LABEL + 5)];
    Some(match find(close_window, b"-----", 0) {
        Some(close) => close_from + close + 5,
        None => close_from,
    })
}

/// The first position at or after `from` where `needle` occurs.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

fn run_end(hay: &[u8], from: usize, class: fn(u8) -> bool) -> usize {
    let from = from.min(hay.len());
    from + hay[from..].iter().take_while(|b| class(**b)).count()
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_pat_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_slack_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// base64url, which is also the charset of OpenAI and Anthropic keys.
fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn looks_random(run: &[u8]) -> bool {
    run.len() >= 20
        && run.iter().any(u8::is_ascii_uppercase)
        && run.iter().any(u8::is_ascii_lowercase)
        && run.iter().any(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_check_lets_every_prefix_through() {
        for (prefix, _) in PREFIXES {
            assert!(may_hold_prefix(prefix.as_bytes()), "{prefix}");
            assert!(
                may_hold_prefix(format!("x {prefix}").as_bytes()),
                "{prefix}"
            );
        }
        assert!(!may_hold_prefix(b"application/json; charset=utf-8"));
        assert!(!may_hold_prefix(b""));
    }
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn hits(text: &str) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        scan(text.as_bytes(), |rule, span| {
            out.push((rule.id(), &text[span]))
        });
        out
    }

    fn jwt(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.dGVzdC1zZWNyZXQtc2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn each_rule_fires_on_its_pattern_with_the_exact_span() {
        let cases = [
            ("aws_access_key_id", "AKIATESTSECRET000001".to_string()),
            ("aws_access_key_id", "ASIATESTSECRET000002".to_string()),
            ("github_token", format!("ghp_{}", "T3stSecret".repeat(4))),
            ("github_token", format!("ghs_{}", "a1".repeat(18))),
            (
                "github_token",
                format!("github_pat_{}", "Test_Secret_0".repeat(2)),
            ),
            ("slack_token", "xoxb-1234567890-test-secret".to_string()),
            (
                "openai_api_key",
                "sk-TestSecret0123456789abcdef".to_string(),
            ),
            (
                "openai_api_key",
                "sk-proj-Test_Secret-0123456789xyz".to_string(),
            ),
            (
                "anthropic_api_key",
                "sk-ant-api03-test-secret-0000000".to_string(),
            ),
            (
                "private_key",
                "-----BEGIN RSA PRIVATE KEY-----\nMIItest\n-----END RSA PRIVATE KEY-----"
                    .to_string(),
            ),
            (
                "private_key",
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\nx\n-----END PGP PRIVATE KEY BLOCK-----"
                    .to_string(),
            ),
            ("jwt", jwt(r#"{"alg":"HS256"}"#, r#"{"sub":"test-secret"}"#)),
        ];
        for (rule, secret) in cases {
            let text = format!("before {secret} after");
            assert_eq!(hits(&text), vec![(rule, secret.as_str())], "{text}");
        }
    }

    #[test]
    fn every_jwt_alignment_is_recognised() {
        for pad in ["", "a", "ab", "abc"] {
            let token = jwt(
                &format!(r#"{{"alg":"HS256","x":"{pad}"}}"#),
                &format!(r#"{{"s":"{pad}{pad}"}}"#),
            );
            assert_eq!(hits(&token), vec![("jwt", token.as_str())]);
        }
    }

    #[test]
    fn prefixes_inside_words_do_not_match() {
        for text in [
            "task-list-and-more-words-here-0123ABC",
            "xAKIATESTSECRET000001",
            "nghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "monkeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        ] {
            assert_eq!(hits(text), vec![], "{text}");
        }
    }

    #[test]
    fn near_misses_do_not_match() {
        for text in [
            "AKIATESTSECRET00000",                 // 15 after the prefix
            "AKIATESTSECRET0000012",               // 17
            "AKIAtestsecret000001",                // lowercase
            "ghp_short0123456789",                 // too short
            "github_pat_short",                    // too short
            "xoxb-no-digits-in-here",              // no digit
            "sk-learn-is-a-python-library-for-ml", // prose: one case only
            "sk-0123456789012345678901234",        // digits only
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----",
            "eyJhbGciOiJIUzI1NiJ9",                      // header only
            "eyJhbGciOiJIUzI1NiJ9.notjson.sig",          // payload not eyJ
            "eyJhbGciOiJIUzI1NiJ9x.eyJzdWIiOiIxIn0.sig", // header length 1 mod 4
            "eyJhbGciOiJIUzI1NiJ.eyJzdWIiOiIxIn0.sig",   // header does not end in }
        ] {
            assert_eq!(hits(text), vec![], "{text}");
        }
    }

    #[test]
    fn ordinary_traffic_is_quiet() {
        let texts = [
            r#"{"id":"550e8400-e29b-41d4-a716-446655440000","sha":"3f786850e387550fdab836ed7e6dc881de23001b","task":"risk-assessment"}"#,
            "GET /repos/acme/widgets/issues?state=open&per_page=100",
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
            "The disk-usage of the desk-top is 12GB; ask-me-anything threads are fun.",
        ];
        for text in texts {
            assert_eq!(hits(text), vec![], "{text}");
        }
    }

    #[test]
    fn a_failed_longer_prefix_falls_back_to_the_shorter_rule() {
        let text = "sk-ant-Short0";
        assert_eq!(hits(text), vec![]);
        let text = "sk-antTestSecret0123456789";
        assert_eq!(hits(text), vec![("openai_api_key", text)]);
    }

    #[test]
    fn a_valid_token_after_a_failed_candidate_in_the_same_run_is_found() {
        let token = jwt(r#"{"alg":"none"}"#, r#"{"sub":"test-secret"}"#);
        // Six bytes in front make the first candidate's header 1 mod 4 long.
        let text = format!("eyJ-x-{token}");
        assert_eq!(hits(&text), vec![("jwt", token.as_str())]);
    }

    #[test]
    fn a_private_key_without_end_marker_runs_to_the_end() {
        let text = "x -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA";
        assert_eq!(hits(text), vec![("private_key", &text[2..])]);
    }

    #[test]
    fn adversarial_input_scans_in_linear_time() {
        let inputs = [
            "-sk-a".repeat(200_000),
            "-eyJ".repeat(250_000) + ".eyJx.y",
            "-xoxb-a".repeat(150_000),
            "-----BEGIN X PRIVATE KEY-".repeat(40_000),
            "_github_pat_".repeat(80_000),
        ];
        for input in inputs {
            let started = std::time::Instant::now();
            let _ = rules_in(input.as_bytes());
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "scan of {} bytes took {:?}",
                input.len(),
                started.elapsed()
            );
        }
    }

    #[test]
    fn rule_set_reports_in_rule_order() {
        let mut set = RuleSet::default();
        assert!(set.is_empty());
        set.insert(Rule::Jwt);
        set.insert(Rule::AwsAccessKeyId);
        set.insert(Rule::Jwt);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![Rule::AwsAccessKeyId, Rule::Jwt]
        );
    }
}
