//! The text the board prints after a soft reset (`v`), ending in `$$$`:
//!
//! ```text
//! OpenBCI V3 8-16 channel
//! On Board ADS1299 Device ID: 0x3E
//! On Daisy ADS1299 Device ID: 0x3E
//! LIS3DH Device ID: 0x33
//! Firmware: v3.1.2
//! $$$
//! ```
//!
//! Older firmware prints less (v1: no `Firmware:` line, `ADS1299 Device ID:` without `On Board`);
//! emulators print their own first line. Only the ADS1299 lines decide anything: a second one
//! (`On Daisy`) means a Daisy is attached.

/// End of every reply of the board.
pub const EOT: &str = "$$$";

/// What the banner says about the board.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Banner {
    /// The first non-empty line (`OpenBCI V3 8-16 channel`).
    pub board: String,
    /// `v3.1.2` as printed, when the firmware says it (v2 and later).
    pub firmware: Option<String>,
    /// The on-board ADS1299's id (`0x3E`).
    pub board_ads_id: Option<u8>,
    /// The Daisy's ADS1299 id when one answered.
    pub daisy_ads_id: Option<u8>,
    pub accel_id: Option<u8>,
}

fn hex_id(value: &str) -> Option<u8> {
    let v = value.trim();
    let digits = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")).unwrap_or(v);
    u8::from_str_radix(digits, 16).ok()
}

impl Banner {
    /// Parses the banner text (everything before `$$$`). Unknown lines are ignored; a banner
    /// with no line at all, or with nothing that looks like an OpenBCI board, is an error.
    pub fn parse(text: &str) -> Result<Banner, String> {
        let mut banner = Banner::default();
        let mut recognised = false;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if banner.board.is_empty() {
                banner.board = line.chars().take(120).collect();
            }
            let Some((key, value)) = line.split_once(':') else {
                recognised |= line.starts_with("OpenBCI");
                continue;
            };
            let key = key.trim();
            if key.eq_ignore_ascii_case("Firmware") {
                banner.firmware = Some(value.trim().chars().take(40).collect());
                recognised = true;
            } else if key.ends_with("ADS1299 Device ID") {
                recognised = true;
                if key.starts_with("On Daisy") {
                    banner.daisy_ads_id = hex_id(value);
                } else {
                    banner.board_ads_id = hex_id(value);
                }
            } else if key.ends_with("LIS3DH Device ID") {
                banner.accel_id = hex_id(value);
            }
        }
        if banner.board.is_empty() {
            return Err("the board answered the reset with an empty banner".into());
        }
        if !recognised {
            return Err(format!(
                "the reply to the reset does not look like an OpenBCI board (first line: {:?})",
                banner.board
            ));
        }
        Ok(banner)
    }

    pub fn has_daisy(&self) -> bool {
        self.daisy_ads_id.is_some()
    }

    /// One line for the session description.
    pub fn summary(&self) -> String {
        let mut s = self.board.clone();
        if let Some(fw) = &self.firmware {
            s.push_str(", firmware ");
            s.push_str(fw);
        }
        if self.has_daisy() {
            s.push_str(", Daisy attached");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_banner_with_daisy() {
        let b = Banner::parse(
            "OpenBCI V3 8-16 channel\r\nOn Board ADS1299 Device ID: 0x3E\r\nOn Daisy ADS1299 Device ID: 0x3E\r\n\
             LIS3DH Device ID: 0x33\r\nFirmware: v3.1.2\r\n",
        )
        .unwrap();
        assert_eq!(b.firmware.as_deref(), Some("v3.1.2"));
        assert_eq!((b.board_ads_id, b.daisy_ads_id, b.accel_id), (Some(0x3E), Some(0x3E), Some(0x33)));
        assert!(b.has_daisy());
        assert_eq!(b.summary(), "OpenBCI V3 8-16 channel, firmware v3.1.2, Daisy attached");
    }

    #[test]
    fn v1_banner_without_daisy() {
        let b = Banner::parse("OpenBCI V3 16 channel\nADS1299 Device ID: 0x3E\nLIS3DH Device ID: 0x33\n").unwrap();
        assert_eq!(b.firmware, None);
        assert_eq!(b.board_ads_id, Some(0x3E));
        assert!(!b.has_daisy());
    }

    #[test]
    fn junk_is_refused() {
        assert!(Banner::parse("\r\n  \n").unwrap_err().contains("empty"));
        let err = Banner::parse("AT+OK\nhello: world\n").unwrap_err();
        assert!(err.contains("does not look like an OpenBCI board") && err.contains("AT+OK"), "{err}");
    }
}
