//! The cyclic redundancy checks S3 accepts as payload checksums: CRC-32
//! (ISO-HDLC, zlib's), CRC-32C (Castagnoli, iSCSI) and CRC-64/NVME. All
//! three are reflected with all-ones init and final XOR, so one
//! slicing-by-8 loop serves them; each table is built at compile time.

/// A reflected CRC of up to 64 bits, with its slicing-by-8 tables.
pub(crate) struct Crc {
    tables: [[u64; 256]; 8],
    /// All ones in the CRC's width: the init value and the final XOR.
    ones: u64,
}

/// CRC-32/ISO-HDLC (reflected polynomial 0xEDB88320).
pub(crate) const CRC32: Crc = Crc::new(0xEDB8_8320, 32);
/// CRC-32/ISCSI, "CRC32C" (reflected polynomial 0x82F63B78).
pub(crate) const CRC32C: Crc = Crc::new(0x82F6_3B78, 32);
/// CRC-64/NVME (reflected polynomial 0x9A6C9329AC4BC9B5).
pub(crate) const CRC64_NVME: Crc = Crc::new(0x9A6C_9329_AC4B_C9B5, 64);

impl Crc {
    const fn new(reflected_poly: u64, width: u32) -> Crc {
        let mut tables = [[0u64; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u64;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ reflected_poly
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            tables[0][i] = crc;
            i += 1;
        }
        let mut k = 1;
        while k < 8 {
            let mut i = 0;
            while i < 256 {
                let prev = tables[k - 1][i];
                tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
                i += 1;
            }
            k += 1;
        }
        let ones = if width == 64 {
            u64::MAX
        } else {
            (1 << width) - 1
        };
        Crc { tables, ones }
    }

    /// The CRC of `data`.
    pub(crate) fn checksum(&self, data: &[u8]) -> u64 {
        self.finish(self.update(self.start(), data))
    }

    /// The state before any data: a CRC computed piece by piece is
    /// `finish(update(update(start(), a), b))`.
    pub(crate) fn start(&self) -> u64 {
        self.ones
    }

    /// The CRC of the data fed so far, from its state.
    pub(crate) fn finish(&self, state: u64) -> u64 {
        state ^ self.ones
    }

    /// The state after `data`, from the state before it.
    pub(crate) fn update(&self, state: u64, data: &[u8]) -> u64 {
        let t = &self.tables;
        let mut crc = state;
        let mut blocks = data.chunks_exact(8);
        for block in &mut blocks {
            let word = crc ^ u64::from_le_bytes(block.try_into().expect("eight bytes"));
            crc = t[7][(word & 0xff) as usize]
                ^ t[6][((word >> 8) & 0xff) as usize]
                ^ t[5][((word >> 16) & 0xff) as usize]
                ^ t[4][((word >> 24) & 0xff) as usize]
                ^ t[3][((word >> 32) & 0xff) as usize]
                ^ t[2][((word >> 40) & 0xff) as usize]
                ^ t[1][((word >> 48) & 0xff) as usize]
                ^ t[0][(word >> 56) as usize];
        }
        for &byte in blocks.remainder() {
            crc = (crc >> 8) ^ t[0][((crc ^ u64::from(byte)) & 0xff) as usize];
        }
        crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue's check values: the CRC of the ASCII digits "123456789".
    #[test]
    fn check_values() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        assert_eq!(CRC64_NVME.checksum(b"123456789"), 0xAE8B_1486_0A79_9888);
        for crc in [&CRC32, &CRC32C, &CRC64_NVME] {
            assert_eq!(crc.checksum(b""), 0);
        }
    }

    /// The eight-byte loop agrees with the byte loop at every length and
    /// alignment (the byte loop alone is the textbook algorithm).
    #[test]
    fn sliced_and_bytewise_agree() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 131 + 7) as u8).collect();
        for crc in [&CRC32, &CRC32C, &CRC64_NVME] {
            for start in 0..9 {
                for end in start..data.len() {
                    let slice = &data[start..end];
                    let mut bytewise = crc.ones;
                    for &b in slice {
                        bytewise = (bytewise >> 8)
                            ^ crc.tables[0][((bytewise ^ u64::from(b)) & 0xff) as usize];
                    }
                    assert_eq!(crc.checksum(slice), bytewise ^ crc.ones);
                }
            }
        }
    }

    /// A CRC fed in pieces is the CRC of their concatenation.
    #[test]
    fn pieces_agree_with_the_whole() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 1) as u8).collect();
        for crc in [&CRC32, &CRC32C, &CRC64_NVME] {
            for split in 0..data.len() {
                let (a, b) = data.split_at(split);
                let state = crc.update(crc.update(crc.start(), a), b);
                assert_eq!(crc.finish(state), crc.checksum(&data));
            }
        }
    }

    /// CRC-64/NVME of 4096 zero bytes and of 4096 0xFF bytes, from the NVM
    /// Command Set specification's examples.
    #[test]
    fn nvme_specification_examples() {
        assert_eq!(CRC64_NVME.checksum(&[0u8; 4096]), 0x6482_D367_EB22_B64E);
        assert_eq!(CRC64_NVME.checksum(&[0xFFu8; 4096]), 0xC0DD_BA73_02EC_A3AC);
    }
}
