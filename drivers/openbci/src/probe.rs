//! `devices`: the serial ports whose USB device is the OpenBCI dongle (FTDI FT231X, 0403:6015),
//! found in sysfs, plus the ports named in `BCI2TOKEN_OPENBCI_PORTS` (comma-separated; for
//! adapters with other ids, or fixed names from udev symlinks).

use std::path::Path;

use bci2token_driver_abi::serial::{read_trimmed, usb_ports};
use bci2token_driver_abi::types::DeviceInfo;

/// The dongle's USB vendor and product ids.
pub const DONGLE_USB_ID: (&str, &str) = ("0403", "6015");
/// Environment variable with extra ports to list.
pub const PORTS_ENV: &str = "BCI2TOKEN_OPENBCI_PORTS";

/// Dongles under `sysfs` (normally `/sys`), sorted by device name.
pub fn dongles(sysfs: &Path) -> Vec<DeviceInfo> {
    let mut found = Vec::new();
    for usb in usb_ports(sysfs) {
        if (usb.vendor.as_str(), usb.product.as_str()) != DONGLE_USB_ID {
            continue;
        }
        let mut description = format!("OpenBCI dongle (FTDI {}:{}", DONGLE_USB_ID.0, DONGLE_USB_ID.1);
        if let Some(s) = &usb.serial {
            description.push_str(&format!(", serial {s}"));
        }
        description.push(')');
        if let Some(ms) = read_trimmed(&usb.sysfs.join("device/latency_timer")).and_then(|v| v.parse::<u32>().ok()) {
            if ms > 1 {
                description.push_str(&format!(
                    "; FTDI latency timer {ms} ms: data arrives in bursts, install the udev rule that sets 1 ms"
                ));
            }
        }
        let mut config = serde_json::Map::new();
        config.insert("port".into(), usb.port.clone().into());
        found.push(DeviceInfo { id: usb.port, description, config });
    }
    found
}

/// The FTDI latency timer (ms) of the USB serial port behind `port`, if it has one.
pub fn latency_timer(sysfs: &Path, port: &Path) -> Option<u32> {
    let name = std::fs::canonicalize(port).ok()?.file_name()?.to_owned();
    let path = sysfs.join("class/tty").join(name).join("device/latency_timer");
    read_trimmed(&path)?.parse().ok()
}

/// Dongles, then configured ports not already listed.
pub fn probe(sysfs: &Path, configured: Option<&str>) -> Vec<DeviceInfo> {
    let mut list = dongles(sysfs);
    for port in configured.unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if list.iter().any(|d| d.id == port) {
            continue;
        }
        let state = if Path::new(port).exists() { "present" } else { "not present now" };
        let mut config = serde_json::Map::new();
        config.insert("port".into(), port.into());
        list.push(DeviceInfo {
            id: port.to_string(),
            description: format!("serial port from {PORTS_ENV} ({state})"),
            config,
        });
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs tree with one dongle (ttyUSB0), one other FTDI adapter (ttyUSB1) and a built-in
    /// UART (ttyS0, no USB parent), linked the way the kernel links them.
    fn fake_sysfs(root: &Path) {
        let usb = |dev: &str, product: &str, serial: &str, tty: &str| {
            let dir = root.join(format!("devices/pci0000:00/usb1/{dev}"));
            std::fs::create_dir_all(dir.join(format!("{dev}:1.0/{tty}"))).unwrap();
            std::fs::write(dir.join("idVendor"), "0403\n").unwrap();
            std::fs::write(dir.join("idProduct"), format!("{product}\n")).unwrap();
            std::fs::write(dir.join("serial"), format!("{serial}\n")).unwrap();
            std::fs::write(dir.join(format!("{dev}:1.0/{tty}/latency_timer")), "16\n").unwrap();
            std::fs::create_dir_all(root.join(format!("class/tty/{tty}"))).unwrap();
            symlink(dir.join(format!("{dev}:1.0/{tty}")), root.join(format!("class/tty/{tty}/device"))).unwrap();
        };
        usb("1-1", "6015", "DM00ABCD", "ttyUSB0");
        usb("1-2", "6001", "A5XK3RJT", "ttyUSB1");
        std::fs::create_dir_all(root.join("devices/platform/serial8250/tty/ttyS0")).unwrap();
        std::fs::create_dir_all(root.join("class/tty/ttyS0")).unwrap();
        symlink(root.join("devices/platform/serial8250"), root.join("class/tty/ttyS0/device")).unwrap();
    }

    /// The udev rule shipped in systemd/ must match the same dongle and do its three jobs.
    #[test]
    fn the_udev_rule_matches_the_dongle_this_driver_lists() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../systemd/70-bci2token-openbci.rules");
        let text = std::fs::read_to_string(&path).unwrap();
        let rules: Vec<String> = text
            .replace("\\\n", " ")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let ids = format!("{{idVendor}}==\"{}\", ATTRS{{idProduct}}==\"{}\"", DONGLE_USB_ID.0, DONGLE_USB_ID.1);
        let rule_with = |needle: &str| rules.iter().find(|r| r.contains(needle) && r.contains(&ids)).cloned();
        let tty = rule_with("SUBSYSTEM==\"tty\"").expect("a tty rule for 0403:6015");
        assert!(tty.contains("GROUP=\"bci2token\"") && tty.contains("MODE=\"0660\""), "{tty}");
        assert!(tty.contains("ENV{ID_MM_DEVICE_IGNORE}=\"1\""), "{tty}");
        let timer = rule_with("ATTR{latency_timer}=\"1\"").expect("a rule setting the latency timer");
        assert!(timer.contains("DRIVER==\"ftdi_sio\""), "{timer}");
    }

    #[test]
    fn finds_only_the_dongle_and_adds_configured_ports() {
        let root = std::env::temp_dir().join(format!("bci2token-sysfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        fake_sysfs(&root);
        let list = probe(&root, Some("/dev/ttyUSB0, /dev/cyton-left"));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0].id, "/dev/ttyUSB0");
        assert!(list[0].description.contains("serial DM00ABCD"), "{}", list[0].description);
        assert!(list[0].description.contains("latency timer 16 ms"), "{}", list[0].description);
        assert_eq!(list[0].config["port"], "/dev/ttyUSB0");
        assert_eq!(list[1].id, "/dev/cyton-left");
        assert!(list[1].description.contains("not present now"));
    }
}
