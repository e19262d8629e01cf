//! The checksums S3 takes for a payload, and the headers that declare them.

use base64::Engine as _;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::{malformed, single, PayloadError, CHECKSUM_PREFIX, SDK_ALGORITHM};
use crate::sanitize::crc::{Crc, CRC32, CRC32C, CRC64_NVME};

/// A checksum algorithm S3 accepts for a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// CRC-32 (ISO-HDLC).
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// MD5 (carried, not checked: credgate has no MD5).
    Md5,
    /// XXH64 (carried, not checked).
    Xxhash64,
    /// XXH3, 64 bits (carried, not checked).
    Xxhash3,
    /// XXH3, 128 bits (carried, not checked).
    Xxhash128,
}

/// Each algorithm: its S3 name, its header, its size in bytes.
const ALGORITHMS: [(ChecksumAlgorithm, &str, &str, usize); 10] = [
    (ChecksumAlgorithm::Crc32, "CRC32", "x-amz-checksum-crc32", 4),
    (
        ChecksumAlgorithm::Crc32c,
        "CRC32C",
        "x-amz-checksum-crc32c",
        4,
    ),
    (
        ChecksumAlgorithm::Crc64Nvme,
        "CRC64NVME",
        "x-amz-checksum-crc64nvme",
        8,
    ),
    (ChecksumAlgorithm::Sha1, "SHA1", "x-amz-checksum-sha1", 20),
    (
        ChecksumAlgorithm::Sha256,
        "SHA256",
        "x-amz-checksum-sha256",
        32,
    ),
    (
        ChecksumAlgorithm::Sha512,
        "SHA512",
        "x-amz-checksum-sha512",
        64,
    ),
    (ChecksumAlgorithm::Md5, "MD5", "x-amz-checksum-md5", 16),
    (
        ChecksumAlgorithm::Xxhash64,
        "XXHASH64",
        "x-amz-checksum-xxhash64",
        8,
    ),
    (
        ChecksumAlgorithm::Xxhash3,
        "XXHASH3",
        "x-amz-checksum-xxhash3",
        8,
    ),
    (
        ChecksumAlgorithm::Xxhash128,
        "XXHASH128",
        "x-amz-checksum-xxhash128",
        16,
    ),
];

impl ChecksumAlgorithm {
    pub(super) fn entry(self) -> (ChecksumAlgorithm, &'static str, &'static str, usize) {
        *ALGORITHMS
            .iter()
            .find(|entry| entry.0 == self)
            .expect("every algorithm is in the table")
    }

    /// The name S3 uses (`CRC32`, `CRC64NVME`, …).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The header (and trailer) carrying a checksum of this kind.
    pub fn header(self) -> HeaderName {
        HeaderName::from_static(self.entry().2)
    }

    /// The algorithm S3 calls `name`, in any case.
    pub(super) fn from_name(name: &str) -> Option<ChecksumAlgorithm> {
        ALGORITHMS
            .iter()
            .find(|entry| entry.1.eq_ignore_ascii_case(name))
            .map(|entry| entry.0)
    }

    /// The algorithm whose header (or trailer) is `name` (lowercase).
    pub(super) fn from_header(name: &str) -> Option<ChecksumAlgorithm> {
        ALGORITHMS
            .iter()
            .find(|entry| entry.2 == name)
            .map(|entry| entry.0)
    }

    /// The checksum of `data`, base64 as S3 writes it; `None` for the
    /// algorithms credgate does not compute (MD5, the XXH family), whose
    /// value it carries as sent for S3 to check.
    pub fn encode(self, data: &[u8]) -> Option<String> {
        use aws_lc_rs::digest;
        let digest: Vec<u8> = match self {
            ChecksumAlgorithm::Crc32 => (CRC32.checksum(data) as u32).to_be_bytes().to_vec(),
            ChecksumAlgorithm::Crc32c => (CRC32C.checksum(data) as u32).to_be_bytes().to_vec(),
            ChecksumAlgorithm::Crc64Nvme => CRC64_NVME.checksum(data).to_be_bytes().to_vec(),
            ChecksumAlgorithm::Sha1 => digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)
                .as_ref()
                .to_vec(),
            ChecksumAlgorithm::Sha256 => crate::secret::sha256(data).to_vec(),
            ChecksumAlgorithm::Sha512 => digest::digest(&digest::SHA512, data).as_ref().to_vec(),
            ChecksumAlgorithm::Md5
            | ChecksumAlgorithm::Xxhash64
            | ChecksumAlgorithm::Xxhash3
            | ChecksumAlgorithm::Xxhash128 => return None,
        };
        Some(base64::engine::general_purpose::STANDARD.encode(digest))
    }

    /// A checksum of this kind computed piece by piece; `None` for the
    /// algorithms [`encode`](ChecksumAlgorithm::encode) does not compute.
    pub(super) fn running(self) -> Option<Running> {
        use aws_lc_rs::digest;
        let state = match self {
            ChecksumAlgorithm::Crc32 => RunningState::Crc(&CRC32, CRC32.start(), 4),
            ChecksumAlgorithm::Crc32c => RunningState::Crc(&CRC32C, CRC32C.start(), 4),
            ChecksumAlgorithm::Crc64Nvme => RunningState::Crc(&CRC64_NVME, CRC64_NVME.start(), 8),
            ChecksumAlgorithm::Sha1 => {
                RunningState::Digest(digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY))
            }
            ChecksumAlgorithm::Sha256 => {
                RunningState::Digest(digest::Context::new(&digest::SHA256))
            }
            ChecksumAlgorithm::Sha512 => {
                RunningState::Digest(digest::Context::new(&digest::SHA512))
            }
            ChecksumAlgorithm::Md5
            | ChecksumAlgorithm::Xxhash64
            | ChecksumAlgorithm::Xxhash3
            | ChecksumAlgorithm::Xxhash128 => return None,
        };
        Some(Running(state))
    }

    /// How many bytes a checksum of this kind has.
    pub(super) fn digest_len(self) -> usize {
        self.entry().3
    }
}

/// A checksum being computed over a payload that arrives in pieces.
pub(super) struct Running(RunningState);

enum RunningState {
    /// The CRC, its state, and its size in bytes.
    Crc(&'static Crc, u64, usize),
    Digest(aws_lc_rs::digest::Context),
}

impl Running {
    /// Adds the next piece of the payload.
    pub(super) fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            RunningState::Crc(crc, state, _) => *state = crc.update(*state, data),
            RunningState::Digest(context) => context.update(data),
        }
    }

    /// The checksum of everything added, base64 as S3 writes it (what
    /// [`ChecksumAlgorithm::encode`] gives for the whole payload).
    pub(super) fn finish(self) -> String {
        let digest = match self.0 {
            RunningState::Crc(crc, state, size) => {
                crc.finish(state).to_be_bytes()[8 - size..].to_vec()
            }
            RunningState::Digest(context) => context.finish().as_ref().to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

/// `value` if it is the base64 of a checksum of `algorithm`'s size.
pub(super) fn checked_base64(
    value: &str,
    algorithm: ChecksumAlgorithm,
    place: &str,
) -> Result<String, PayloadError> {
    match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(bytes) if bytes.len() == algorithm.digest_len() => Ok(value.to_string()),
        _ => Err(malformed(format!(
            "the {} checksum in the {place} is not the base64 of {} bytes",
            algorithm.name(),
            algorithm.digest_len()
        ))),
    }
}

/// A checksum as declared: its algorithm and base64 value.
pub(super) type Checksum = (ChecksumAlgorithm, String);

/// A checksum setting carried into the re-signed request.
pub(super) type Setting = (HeaderName, HeaderValue);

/// The integrity headers credgate reads (the checksums come from
/// [`ALGORITHMS`]); `x-amz-checksum-mode` is not among them: it asks S3 for
/// checksums in the response, and is stripped like any other `x-amz-*`.
const SETTINGS: [&str; 4] = [
    SDK_ALGORITHM,
    "x-amz-checksum-algorithm",
    "x-amz-checksum-type",
    "x-amz-mp-object-size",
];

/// The header checksum and the checksum settings, checked and removed from
/// `headers`.
pub(super) fn checksum_headers(
    headers: &mut HeaderMap,
) -> Result<(Option<Checksum>, Vec<Setting>), PayloadError> {
    // The names are the agent's to choose: only known ones go on, and no
    // message repeats one.
    let mut names: Vec<&'static str> = Vec::new();
    for name in headers.keys() {
        let name = name.as_str();
        if let Some(known) = SETTINGS.iter().find(|s| **s == name) {
            names.push(known);
        } else if let Some(algorithm) = ChecksumAlgorithm::from_header(name) {
            names.push(algorithm.entry().2);
        } else if name.starts_with(CHECKSUM_PREFIX) && name != "x-amz-checksum-mode" {
            return Err(PayloadError::Unsupported(
                "the request carries an x-amz-checksum-* header credgate does not know".into(),
            ));
        }
    }
    let mut checksum = None;
    let mut settings = Vec::new();
    for name in names {
        let value = single(headers, name)?.unwrap_or_default();
        let header = HeaderName::from_static(name);
        let setting = |value: HeaderValue| (header.clone(), value);
        match name {
            SDK_ALGORITHM | "x-amz-checksum-algorithm" => {
                let algorithm = ChecksumAlgorithm::from_name(value).ok_or_else(|| {
                    PayloadError::Unsupported(format!("{name} names an algorithm S3 does not take"))
                })?;
                settings.push(setting(HeaderValue::from_static(algorithm.name())));
            }
            "x-amz-checksum-type" => {
                let kind = ["FULL_OBJECT", "COMPOSITE"]
                    .into_iter()
                    .find(|k| k.eq_ignore_ascii_case(value))
                    .ok_or_else(|| {
                        PayloadError::Unsupported(
                            "x-amz-checksum-type is neither FULL_OBJECT nor COMPOSITE".into(),
                        )
                    })?;
                settings.push(setting(HeaderValue::from_static(kind)));
            }
            "x-amz-mp-object-size" => {
                let size: u64 = Some(value)
                    .filter(|v| {
                        !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| malformed("x-amz-mp-object-size is not a number"))?;
                settings.push(setting(HeaderValue::from(size)));
            }
            _ => {
                let algorithm =
                    ChecksumAlgorithm::from_header(name).expect("a name from the table");
                if checksum.is_some() {
                    return Err(malformed(
                        "the request carries more than one checksum header",
                    ));
                }
                checksum = Some((algorithm, checked_base64(value, algorithm, "header")?));
            }
        }
        headers.remove(name);
    }
    Ok((checksum, settings))
}
