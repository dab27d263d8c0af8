//! The boards a BrainFlow library knows, and which rows of a board's data become a session's
//! channels. Everything here comes from the library itself (`get_board_descr`), so a newer
//! BrainFlow brings its new boards without a change here.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::library::{BfError, BoardController};

/// Board ids tried when listing: BrainFlow's ids run from -3 (playback) up; 255 leaves room for
/// many more boards than the 67 of BrainFlow 5.23.
const IDS: std::ops::RangeInclusive<i32> = -3..=255;
/// BrainFlow's playback board (`PLAYBACK_FILE_BOARD`): its rows are those of `master_board`.
pub const PLAYBACK: i32 = -3;
/// BrainFlow's streaming board (`STREAMING_BOARD`): likewise.
pub const STREAMING: i32 = -2;

/// `get_board_descr`'s JSON: the rows of one preset of a board. Fields a board lacks are absent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Descr {
    pub name: String,
    #[serde(default)]
    pub sampling_rate: Option<f64>,
    #[serde(default)]
    pub num_rows: Option<usize>,
    #[serde(default)]
    pub eeg_channels: Vec<usize>,
    /// Comma-separated labels of the EEG rows, when the board has a fixed montage.
    #[serde(default)]
    pub eeg_names: Option<String>,
    #[serde(default)]
    pub emg_channels: Vec<usize>,
    #[serde(default)]
    pub ecg_channels: Vec<usize>,
    #[serde(default)]
    pub eog_channels: Vec<usize>,
    #[serde(default)]
    pub accel_channels: Vec<usize>,
    #[serde(default)]
    pub gyro_channels: Vec<usize>,
    #[serde(default)]
    pub magnetometer_channels: Vec<usize>,
    #[serde(default)]
    pub rotation_channels: Vec<usize>,
    #[serde(default)]
    pub ppg_channels: Vec<usize>,
    #[serde(default)]
    pub optical_channels: Vec<usize>,
    #[serde(default)]
    pub eda_channels: Vec<usize>,
    #[serde(default)]
    pub temperature_channels: Vec<usize>,
    #[serde(default)]
    pub resistance_channels: Vec<usize>,
    #[serde(default)]
    pub analog_channels: Vec<usize>,
    #[serde(default)]
    pub other_channels: Vec<usize>,
    #[serde(default)]
    pub battery_channel: Option<usize>,
    #[serde(default)]
    pub package_num_channel: Option<usize>,
    #[serde(default)]
    pub timestamp_channel: Option<usize>,
    #[serde(default)]
    pub marker_channel: Option<usize>,
}

impl Descr {
    pub fn parse(json: &str) -> Result<Descr, String> {
        serde_json::from_str(json).map_err(|e| format!("BrainFlow's board description is not as expected: {e}"))
    }
}

/// A board the library knows.
#[derive(Debug, Clone, PartialEq)]
pub struct Board {
    pub id: i32,
    pub name: String,
    /// Of the default preset (none for playback and streaming, which take a master board's).
    pub rate: Option<f64>,
    pub eeg: usize,
    pub presets: Vec<i32>,
}

/// Every board the library describes, by id.
pub fn catalogue(lib: &BoardController) -> Result<Vec<Board>, BfError> {
    let mut boards = Vec::new();
    for id in IDS {
        let Some(json) = lib.board_descr(id, 0)? else { continue };
        let Ok(d) = Descr::parse(&json) else { continue };
        let presets = lib.board_presets(id).unwrap_or_else(|_| vec![0]);
        boards.push(Board { id, name: d.name, rate: d.sampling_rate, eeg: d.eeg_channels.len(), presets });
    }
    Ok(boards)
}

/// A board given by BrainFlow's id or by its name (`Cyton`, `synthetic`; any case). A name two
/// boards share (BrainFlow 5.23 has two `Ganglion`s) must be given by id.
pub fn resolve(boards: &[Board], key: &str, given: &str) -> Result<i32, String> {
    let given = given.trim();
    if let Ok(id) = given.parse::<i32>() {
        return match boards.iter().find(|b| b.id == id) {
            Some(b) => Ok(b.id),
            None => Err(format!(
                "config key `{key}`: BrainFlow has no board {id}; `bci2tokenctl devices --driver brainflow` lists \
                 the boards"
            )),
        };
    }
    let same: Vec<&Board> = boards.iter().filter(|b| b.name.eq_ignore_ascii_case(given)).collect();
    match same.as_slice() {
        [one] => Ok(one.id),
        [] => Err(format!(
            "config key `{key}`: BrainFlow knows no board named {given:?}; give its name or id as `bci2tokenctl \
             devices --driver brainflow` lists them (for example Synthetic, Cyton, Muse2)"
        )),
        many => Err(format!(
            "config key `{key}`: BrainFlow has {} boards named {given:?} (ids {}); give the id",
            many.len(),
            many.iter().map(|b| b.id.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Which rows become channels (`channels` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// The EEG rows (the default).
    Eeg,
    /// EEG, EMG, ECG and EOG rows: every biopotential the board has.
    Exg,
    /// Every data row but the package counter, the time stamp and the marker.
    All,
}

impl Rows {
    pub fn parse(text: &str) -> Result<Rows, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "eeg" => Ok(Rows::Eeg),
            "exg" => Ok(Rows::Exg),
            "all" => Ok(Rows::All),
            other => Err(format!("config key `channels`: {other:?} is not eeg, exg or all")),
        }
    }
}

/// One row of the board's data delivered as a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub row: usize,
    pub label: String,
    /// `uV` for the biopotentials (BrainFlow gives them in µV); the unit BrainFlow documents for
    /// the others.
    pub unit: String,
}

/// The channels of `rows` of a board described by `d`.
pub fn channels(d: &Descr, rows: Rows) -> Vec<Channel> {
    let names: Vec<String> = d.eeg_names.as_deref().unwrap_or("").split(',').map(|s| s.trim().to_string()).collect();
    let named = names.len() == d.eeg_channels.len() && names.iter().all(|n| !n.is_empty());
    let mut out: Vec<Channel> = Vec::new();
    let mut taken = BTreeSet::new();
    for (i, &row) in d.eeg_channels.iter().enumerate() {
        let label = if named { names[i].clone() } else { format!("EEG{}", i + 1) };
        if taken.insert(row) {
            out.push(Channel { row, label, unit: "uV".into() });
        }
    }
    if rows == Rows::Eeg {
        return out;
    }
    let mut add = |kind: &str, list: &[usize], unit: &str| {
        for (i, &row) in list.iter().enumerate() {
            if taken.insert(row) {
                out.push(Channel { row, label: format!("{kind}{}", i + 1), unit: unit.into() });
            }
        }
    };
    add("EMG", &d.emg_channels, "uV");
    add("ECG", &d.ecg_channels, "uV");
    add("EOG", &d.eog_channels, "uV");
    if rows == Rows::Exg {
        return out;
    }
    add("accel", &d.accel_channels, "g");
    add("gyro", &d.gyro_channels, "deg/s");
    add("magnetometer", &d.magnetometer_channels, "raw");
    add("rotation", &d.rotation_channels, "raw");
    add("ppg", &d.ppg_channels, "raw");
    add("optical", &d.optical_channels, "raw");
    add("eda", &d.eda_channels, "uS");
    add("temperature", &d.temperature_channels, "degC");
    add("resistance", &d.resistance_channels, "Ohm");
    add("analog", &d.analog_channels, "raw");
    add("other", &d.other_channels, "raw");
    add("battery", d.battery_channel.as_slice(), "%");
    // Never the bookkeeping rows, whatever a description lists them as.
    out.retain(|c| {
        Some(c.row) != d.package_num_channel && Some(c.row) != d.timestamp_channel && Some(c.row) != d.marker_channel
    });
    out
}

/// The preset a `preset` key names.
pub fn preset(text: &str) -> Result<i32, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "default" | "0" => Ok(0),
        "auxiliary" | "1" => Ok(1),
        "ancillary" | "2" => Ok(2),
        other => Err(format!("config key `preset`: {other:?} is not default, auxiliary or ancillary")),
    }
}

pub fn preset_name(p: i32) -> &'static str {
    match p {
        0 => "default",
        1 => "auxiliary",
        2 => "ancillary",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CYTON: &str = r#"{"accel_channels": [9, 10, 11], "analog_channels": [19, 20, 21], "ecg_channels": [1, 2, 3, 4, 5, 6, 7, 8], "eeg_channels": [1, 2, 3, 4, 5, 6, 7, 8], "eeg_names": "Fp1,Fp2,C3,C4,P7,P8,O1,O2", "emg_channels": [1, 2, 3, 4, 5, 6, 7, 8], "eog_channels": [1, 2, 3, 4, 5, 6, 7, 8], "marker_channel": 23, "name": "Cyton", "num_rows": 24, "other_channels": [12, 13, 14, 15, 16, 17, 18], "package_num_channel": 0, "sampling_rate": 250, "timestamp_channel": 22}"#;

    #[test]
    fn eeg_rows_with_their_names_and_the_rest_only_when_asked() {
        let d = Descr::parse(CYTON).unwrap();
        let eeg = channels(&d, Rows::Eeg);
        assert_eq!(eeg.iter().map(|c| c.row).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
        assert_eq!(eeg[0].label, "Fp1");
        assert_eq!(eeg[7].label, "O2");
        assert!(eeg.iter().all(|c| c.unit == "uV"));
        // The Cyton's EMG/ECG/EOG rows are its EEG rows: nothing twice.
        assert_eq!(channels(&d, Rows::Exg), eeg);
        let all = channels(&d, Rows::All);
        assert_eq!(all.len(), 8 + 3 + 3 + 7);
        assert_eq!(all[8], Channel { row: 9, label: "accel1".into(), unit: "g".into() });
        assert!(all.iter().all(|c| ![0, 22, 23].contains(&c.row)), "no counter, time stamp or marker");
    }

    #[test]
    fn names_that_do_not_fit_the_rows_are_not_used() {
        let d = Descr {
            name: "X".into(),
            eeg_channels: vec![1, 2, 3],
            eeg_names: Some("A,B".into()),
            ..Default::default()
        };
        let labels: Vec<String> = channels(&d, Rows::Eeg).into_iter().map(|c| c.label).collect();
        assert_eq!(labels, ["EEG1", "EEG2", "EEG3"]);
    }

    #[test]
    fn boards_by_id_or_name_and_shared_names_need_the_id() {
        let b = |id, name: &str| Board { id, name: name.into(), rate: Some(250.0), eeg: 8, presets: vec![0] };
        let boards = [b(-1, "Synthetic"), b(0, "Cyton"), b(1, "Ganglion"), b(46, "Ganglion")];
        assert_eq!(resolve(&boards, "board", "synthetic").unwrap(), -1);
        assert_eq!(resolve(&boards, "board", " 0 ").unwrap(), 0);
        assert!(resolve(&boards, "board", "Ganglion").unwrap_err().contains("ids 1, 46"));
        assert_eq!(resolve(&boards, "board", "46").unwrap(), 46);
        let e = resolve(&boards, "board", "nosuch").unwrap_err();
        assert!(e.contains("\"nosuch\"") && e.contains("devices --driver brainflow"), "{e}");
        assert!(resolve(&boards, "board", "99").unwrap_err().contains("no board 99"));
    }

    #[test]
    fn presets_by_name_or_number() {
        assert_eq!(preset("Auxiliary").unwrap(), 1);
        assert_eq!(preset("2").unwrap(), 2);
        assert!(preset("extra").unwrap_err().contains("default, auxiliary or ancillary"));
    }
}
