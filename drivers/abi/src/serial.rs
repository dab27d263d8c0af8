//! Serial lines for the drivers that open them (openbci, brainflow): which device files count as
//! one, and the USB serial ports sysfs shows. A driver runs with the daemon's rights, so a port a
//! caller names is checked here before anything opens it.

use std::path::{Path, PathBuf};

/// A serial line: a USB serial adapter (ttyUSB, major 188; ttyACM, 166), or a pseudo-terminal
/// (136–143) when allowed; never a file, a watchdog, a disk or a console.
pub fn is_serial_line(m: &std::fs::Metadata, allow_pty: bool) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let rdev = m.rdev();
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    m.file_type().is_char_device() && (matches!(major, 188 | 166) || (allow_pty && (136..=143).contains(&major)))
}

/// The device a port name leads to, for a library that opens ports by name itself (BrainFlow):
/// the canonical path, which must be a serial line ([`is_serial_line`]) directly in `/dev` or
/// `/dev/pts`, directories no user can add names to, so what is checked is what the library opens.
pub fn checked_port(path: &Path, allow_pty: bool) -> Result<PathBuf, String> {
    let not_serial = || {
        format!(
            "{} is not a serial port{}",
            path.display(),
            if allow_pty { "" } else { " (pseudo-terminals need the admin's allow_pty setting for this driver)" }
        )
    };
    let resolved = std::fs::canonicalize(path).map_err(|e| format!("{}: no such port ({e})", path.display()))?;
    let parent_ok = matches!(resolved.parent(), Some(p) if p == Path::new("/dev") || p == Path::new("/dev/pts"));
    let meta = std::fs::metadata(&resolved).map_err(|e| format!("{}: {e}", path.display()))?;
    if !parent_ok || !is_serial_line(&meta, allow_pty) {
        return Err(not_serial());
    }
    Ok(resolved)
}

pub fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The USB device directory above a tty's `device` link: the first ancestor with `idVendor`.
pub fn usb_device(tty: &Path) -> Option<PathBuf> {
    let mut dir = std::fs::canonicalize(tty.join("device")).ok()?;
    loop {
        if dir.join("idVendor").exists() {
            return Some(dir);
        }
        if !dir.pop() {
            return None;
        }
    }
}

/// A USB serial port found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbPort {
    /// `/dev/ttyUSB0`
    pub port: String,
    pub vendor: String,
    pub product: String,
    /// The USB product string and serial number, when the device has them.
    pub name: Option<String>,
    pub serial: Option<String>,
    /// The tty's sysfs directory (`/sys/class/tty/ttyUSB0`).
    pub sysfs: PathBuf,
}

/// Every tty under `sysfs` (normally `/sys`) with a USB device above it, sorted by port.
pub fn usb_ports(sysfs: &Path) -> Vec<UsbPort> {
    let Ok(entries) = std::fs::read_dir(sysfs.join("class/tty")) else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let tty = entry.path();
        let Some(usb) = usb_device(&tty) else { continue };
        found.push(UsbPort {
            port: format!("/dev/{}", entry.file_name().to_string_lossy()),
            vendor: read_trimmed(&usb.join("idVendor")).unwrap_or_default(),
            product: read_trimmed(&usb.join("idProduct")).unwrap_or_default(),
            name: read_trimmed(&usb.join("product")),
            serial: read_trimmed(&usb.join("serial")),
            sysfs: tty,
        });
    }
    found.sort_by(|a, b| a.port.cmp(&b.port));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serial_lines_in_dev_pass() {
        // A regular file, a directory and /dev/null (a character device of major 1) are not.
        let file = std::env::temp_dir().join(format!("bci2token-serial-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        for p in [file.as_path(), Path::new("/tmp"), Path::new("/dev/null")] {
            let e = checked_port(p, true).unwrap_err();
            assert!(e.contains("is not a serial port"), "{e}");
        }
        let _ = std::fs::remove_file(&file);
        assert!(checked_port(Path::new("/dev/ttyNOSUCH"), false).unwrap_err().contains("no such port"));
        // A pseudo-terminal only where allowed.
        let pty = nix_free_pty();
        if let Some(pty) = pty {
            assert!(checked_port(&pty, false).unwrap_err().contains("allow_pty"));
            assert_eq!(checked_port(&pty, true).unwrap(), std::fs::canonicalize(&pty).unwrap());
        }
    }

    /// A new pseudo-terminal's follower side; the leader is left open for the test's life.
    fn nix_free_pty() -> Option<PathBuf> {
        // SAFETY: plain libc calls on a descriptor this function owns; the name buffer is local.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
            if fd < 0 || libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
                return None;
            }
            let mut name = [0 as libc::c_char; 64];
            if libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0 {
                return None;
            }
            Some(PathBuf::from(std::ffi::CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()))
        }
    }
}
