//! Pseudonyms for sharing results: every DICOM UID in a report or a table row becomes
//! `2.25.<decimal>`, derived with HMAC-SHA256 under a secret key.
//!
//! The same UID under the same key always gets the same pseudonym, so studies, series and
//! images still line up across files; without the key the mapping cannot be reversed or
//! recomputed. Reports carry no patient attributes to begin with.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::table::{FindingRow, SeriesRow};
use super::Report;

/// Maps UIDs to pseudonyms under one key.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer { key: <secret> }")
    }
}

impl Pseudonymizer {
    /// A pseudonymizer under the given key (any length; a salt the user keeps).
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Pseudonymizer { key: key.into() }
    }

    /// A pseudonymizer under 32 random bytes from the operating system: pseudonyms that
    /// nobody, not even the one who ran it, can recompute later.
    pub fn random() -> std::io::Result<Self> {
        let mut key = vec![0; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
        Ok(Pseudonymizer { key })
    }

    /// `2.25.<decimal>`: the first 128 bits of HMAC-SHA256(key, uid) as a UUID-derived UID
    /// (PS3.5 B.2), at most 44 characters. The empty string stays empty.
    pub fn uid(&self, uid: &str) -> String {
        if uid.is_empty() {
            return String::new();
        }
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(uid.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        format!("2.25.{}", u128::from_be_bytes(first))
    }

    /// Free text (warnings, reasons) with every UID-like word replaced by its pseudonym and
    /// every path-like word (which may name a patient's folder) by `<path>`.
    pub fn text(&self, text: &str) -> String {
        let words = text.split(' ').map(|word| {
            let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '.');
            let core = core.trim_end_matches('.');
            if word.contains('/') || word.contains('\\') {
                "<path>".to_owned()
            } else if looks_like_uid(core) {
                word.replace(core, &self.uid(core))
            } else {
                word.to_owned()
            }
        });
        words.collect::<Vec<_>>().join(" ")
    }

    /// The report with its UIDs pseudonymized and its warnings scrubbed.
    pub fn report(&self, report: &Report) -> Report {
        let mut out = report.clone();
        out.study_instance_uid = self.uid(&report.study_instance_uid);
        out.series_instance_uid = self.uid(&report.series_instance_uid);
        out.frame_of_reference_uid = self.uid(&report.frame_of_reference_uid);
        out.warnings = report.warnings.iter().map(|w| self.text(w)).collect();
        for finding in &mut out.findings {
            finding.sop_instance_uid = self.uid(&finding.sop_instance_uid);
        }
        if let Some(comparison) = &mut out.comparison {
            comparison.prior_study_instance_uid = self.uid(&comparison.prior_study_instance_uid);
            comparison.prior_series_instance_uid = self.uid(&comparison.prior_series_instance_uid);
        }
        out
    }

    /// The row with its UIDs pseudonymized.
    pub fn finding_row(&self, row: &FindingRow) -> FindingRow {
        FindingRow {
            study_instance_uid: self.uid(&row.study_instance_uid),
            series_instance_uid: self.uid(&row.series_instance_uid),
            sop_instance_uid: self.uid(&row.sop_instance_uid),
            ..row.clone()
        }
    }

    /// The row with its UIDs pseudonymized and its reason scrubbed.
    pub fn series_row(&self, row: &SeriesRow) -> SeriesRow {
        SeriesRow {
            study_instance_uid: self.uid(&row.study_instance_uid),
            series_instance_uid: self.uid(&row.series_instance_uid),
            reason: self.text(&row.reason),
            ..row.clone()
        }
    }
}

/// Digits in at least three dot-separated components: what a DICOM UID looks like,
/// and what numbers and measurements (`1.5`, `12`) do not.
fn looks_like_uid(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_consistent_keyed_and_valid_uids() {
        let a = Pseudonymizer::new("salt");
        let b = Pseudonymizer::new("other salt");
        let uid = "1.2.826.0.1.3680043.8.498.1";
        assert_eq!(a.uid(uid), a.uid(uid));
        assert_ne!(a.uid(uid), b.uid(uid));
        assert_ne!(a.uid(uid), a.uid("1.2.3"));
        let p = a.uid(uid);
        assert!(p.starts_with("2.25.") && p.len() <= 64, "{p}");
        assert!(p[5..].bytes().all(|c| c.is_ascii_digit()), "{p}");
        assert!(!p[5..].starts_with('0') || p.len() == 6, "{p}");
    }

    #[test]
    fn text_loses_uids_and_paths_but_keeps_numbers() {
        let p = Pseudonymizer::new("k");
        let text = "series 1.2.3.4: could not read /data/DOE^JOHN/CT1.dcm: gap of 2.5 mm";
        let out = p.text(text);
        assert!(!out.contains("1.2.3.4") && !out.contains("DOE"), "{out}");
        assert!(
            out.contains(&format!("series {}:", p.uid("1.2.3.4"))),
            "{out}"
        );
        assert!(out.contains("<path>") && out.contains("2.5 mm"), "{out}");
    }
}
