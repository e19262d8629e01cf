//! Decimal digits of an integer without the formatting machinery, for the
//! few numbers written on every request (ports, lengths, record fields).

/// The decimal digits of a `u64`, kept on the stack.
pub(crate) struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    #[inline]
    pub(crate) fn new(mut value: u64) -> Decimal {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        Decimal { digits, start }
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }

    #[inline]
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("ASCII digits")
    }
}

#[cfg(test)]
mod tests {
    use super::Decimal;

    #[test]
    fn writes_what_display_writes() {
        let mut value = 1u64;
        for n in [0, 1, 9, 10, 99, 100, 65_535, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(Decimal::new(n).as_str(), n.to_string());
        }
        for _ in 0..64 {
            value = value
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            assert_eq!(Decimal::new(value).as_str(), value.to_string());
            assert_eq!(
                Decimal::new(value >> 40).as_bytes(),
                (value >> 40).to_string().as_bytes()
            );
        }
    }
}
