//! QIDO-RS query parameters (PS3.18 8.3.4, matching per PS3.4 C.2.2.2): which attributes
//! a search may match at each level, how each value matches, and `limit`, `offset`,
//! `includefield` and `fuzzymatching`.
//!
//! Matching follows the attribute's kind: UIDs by list (`a,b` or `a\b`), dates by single
//! value or range (`20200101-20201231`, `-20201231`, `20200101-`), everything else by
//! single value or wildcard (`*`, `?`). Person names match case-insensitively, as PS3.18
//! allows; other values exactly. An empty value matches everything.
//!
//! Refusals name the parameter, cut to [`MAX_SHOWN`] characters, never its value.

/// A search's level: what one answer item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Study,
    Series,
    Instance,
}

/// How an attribute's value is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uid,
    Date,
    Text,
    PersonName,
}

/// One attribute a search may match or name in `includefield`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub keyword: &'static str,
    /// The tag as eight hex digits (`0020000D`), as DICOM JSON keys it.
    pub tag: &'static str,
    pub level: Level,
    pub kind: Kind,
    /// False for attributes an answer carries but a search cannot match (counts, URLs).
    pub matchable: bool,
}

const fn attribute(
    keyword: &'static str,
    tag: &'static str,
    level: Level,
    kind: Kind,
) -> Attribute {
    Attribute {
        keyword,
        tag,
        level,
        kind,
        matchable: true,
    }
}

const fn answer_only(keyword: &'static str, tag: &'static str, level: Level) -> Attribute {
    Attribute {
        matchable: false,
        ..attribute(keyword, tag, level, Kind::Text)
    }
}

use Kind::{Date, PersonName, Text, Uid};
use Level::{Instance, Series, Study};

/// Every attribute pulmo's searches know.
pub const ATTRIBUTES: &[Attribute] = &[
    attribute("StudyInstanceUID", "0020000D", Study, Uid),
    attribute("PatientID", "00100020", Study, Text),
    attribute("PatientName", "00100010", Study, PersonName),
    attribute("PatientBirthDate", "00100030", Study, Date),
    attribute("PatientSex", "00100040", Study, Text),
    attribute("StudyDate", "00080020", Study, Date),
    attribute("StudyTime", "00080030", Study, Text),
    attribute("AccessionNumber", "00080050", Study, Text),
    attribute("ModalitiesInStudy", "00080061", Study, Text),
    attribute("StudyID", "00200010", Study, Text),
    attribute("StudyDescription", "00081030", Study, Text),
    attribute("ReferringPhysicianName", "00080090", Study, PersonName),
    answer_only("NumberOfStudyRelatedSeries", "00201206", Study),
    answer_only("NumberOfStudyRelatedInstances", "00201208", Study),
    attribute("SeriesInstanceUID", "0020000E", Series, Uid),
    attribute("Modality", "00080060", Series, Text),
    attribute("SeriesNumber", "00200011", Series, Text),
    attribute("SeriesDescription", "0008103E", Series, Text),
    answer_only("NumberOfSeriesRelatedInstances", "00201209", Series),
    attribute("SOPInstanceUID", "00080018", Instance, Uid),
    attribute("SOPClassUID", "00080016", Instance, Uid),
    attribute("InstanceNumber", "00200013", Instance, Text),
    answer_only("Rows", "00280010", Instance),
    answer_only("Columns", "00280011", Instance),
    answer_only("NumberOfFrames", "00280008", Instance),
    answer_only("BitsAllocated", "00280100", Instance),
];

/// The longest parameter name a refusal repeats.
pub const MAX_SHOWN: usize = 64;

/// The most answers one search returns, whatever `limit` says.
pub const MAX_LIMIT: usize = 1000;

/// The largest `limit` or `offset` accepted.
pub const MAX_NUMBER: usize = 1_000_000_000;

/// Why a query string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown query parameter {0:?}")]
    Unknown(String),
    #[error("{name} cannot be matched in a search for {level}")]
    WrongLevel { name: String, level: &'static str },
    #[error("{0} is given more than once")]
    Repeated(String),
    #[error("{name} is not {expected}")]
    BadValue {
        name: String,
        expected: &'static str,
    },
}

/// How one attribute's values must look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Any of these UIDs.
    Uids(Vec<String>),
    /// Dates from and to (inclusive, `YYYYMMDD`), either end open.
    Dates(Option<String>, Option<String>),
    /// A single value or a wildcard pattern; `fold` compares case-insensitively.
    Pattern { pattern: String, fold: bool },
}

impl Match {
    /// Whether any of `values` matches (a multi-valued attribute such as
    /// ModalitiesInStudy matches when one of its values does).
    pub fn matches<S: AsRef<str>>(&self, values: &[S]) -> bool {
        values.iter().any(|v| self.matches_one(v.as_ref()))
    }

    fn matches_one(&self, value: &str) -> bool {
        match self {
            Match::Uids(uids) => uids.iter().any(|u| u == value),
            Match::Dates(from, to) => {
                is_date(value)
                    && from.as_deref().is_none_or(|f| value >= f)
                    && to.as_deref().is_none_or(|t| value <= t)
            }
            Match::Pattern { pattern, fold } if *fold => {
                wildcard(&pattern.to_lowercase(), &value.to_lowercase())
            }
            Match::Pattern { pattern, .. } => wildcard(pattern, value),
        }
    }
}

/// Which attributes an answer carries beyond the level's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Include {
    #[default]
    Defaults,
    All,
    /// These tags (eight hex digits) too.
    Tags(Vec<String>),
}

impl Include {
    /// Whether an answer carries `tag` besides its level's defaults.
    pub fn includes(&self, tag: &str) -> bool {
        match self {
            Include::Defaults => false,
            Include::All => true,
            Include::Tags(tags) => tags.iter().any(|t| t == tag),
        }
    }
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    pub filters: Vec<(Attribute, Match)>,
    pub include: Include,
    pub limit: usize,
    pub offset: usize,
    /// `fuzzymatching=true` was asked; person names match case-insensitively either way.
    pub fuzzy: bool,
}

impl Query {
    /// Whether an item matches every filter; `value` gives an attribute's values by tag.
    pub fn matches(&self, value: impl Fn(&str) -> Vec<String>) -> bool {
        self.filters
            .iter()
            .all(|(attribute, m)| m.matches(&value(attribute.tag)))
    }
}

/// Parses a search at `level` from its query string's decoded `(name, value)` pairs.
pub fn parse(level: Level, pairs: &[(String, String)]) -> Result<Query, QueryError> {
    let mut query = Query {
        limit: MAX_LIMIT,
        ..Query::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        let once = |seen: &mut Vec<&str>, key: &'static str| {
            if seen.contains(&key) {
                return Err(QueryError::Repeated(key.to_owned()));
            }
            seen.push(key);
            Ok(())
        };
        match name.as_str() {
            "limit" => {
                once(&mut seen, "limit")?;
                query.limit = number(name, value)?.min(MAX_LIMIT);
            }
            "offset" => {
                once(&mut seen, "offset")?;
                query.offset = number(name, value)?;
            }
            "fuzzymatching" => {
                once(&mut seen, "fuzzymatching")?;
                query.fuzzy = boolean(name, value)?;
            }
            "includefield" => include(&mut query.include, value)?,
            _ => {
                let attribute = lookup(name).ok_or_else(|| QueryError::Unknown(shown(name)))?;
                if !attribute.matchable || attribute.level > level {
                    return Err(QueryError::WrongLevel {
                        name: attribute.keyword.to_owned(),
                        level: level_name(level),
                    });
                }
                once(&mut seen, attribute.keyword)?;
                if let Some(m) = matcher(attribute, value)? {
                    query.filters.push((attribute, m));
                }
            }
        }
    }
    Ok(query)
}

/// An attribute by keyword or by tag (eight hex digits, either case).
pub fn lookup(name: &str) -> Option<Attribute> {
    ATTRIBUTES
        .iter()
        .find(|a| a.keyword == name || a.tag.eq_ignore_ascii_case(name))
        .copied()
}

fn include(include: &mut Include, value: &str) -> Result<(), QueryError> {
    for field in value.split(',') {
        if field == "all" {
            *include = Include::All;
            continue;
        }
        let tag = match lookup(field) {
            Some(attribute) => attribute.tag.to_owned(),
            None if field.len() == 8 && field.bytes().all(|b| b.is_ascii_hexdigit()) => {
                field.to_ascii_uppercase()
            }
            None => {
                return Err(QueryError::Unknown(format!(
                    "includefield {}",
                    shown(field)
                )))
            }
        };
        match include {
            Include::All => {}
            Include::Tags(tags) => tags.push(tag),
            Include::Defaults => *include = Include::Tags(vec![tag]),
        }
    }
    Ok(())
}

fn matcher(attribute: Attribute, value: &str) -> Result<Option<Match>, QueryError> {
    let bad = |expected| QueryError::BadValue {
        name: attribute.keyword.to_owned(),
        expected,
    };
    if value.is_empty() || value == "*" {
        return Ok(None);
    }
    Ok(Some(match attribute.kind {
        Uid => {
            let uids: Vec<String> = value.split([',', '\\']).map(str::to_owned).collect();
            if !uids.iter().all(|u| is_uid_like(u)) {
                return Err(bad(
                    "a list of UIDs (digits and dots, at most 64 characters)",
                ));
            }
            Match::Uids(uids)
        }
        Date => {
            let expected =
                "a date or date range (YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD, YYYYMMDD-)";
            let (from, to) = match value.split_once('-') {
                None => (Some(value), Some(value)),
                Some((from, to)) => (
                    Some(from).filter(|f| !f.is_empty()),
                    Some(to).filter(|t| !t.is_empty()),
                ),
            };
            if from.is_none() && to.is_none() || ![from, to].iter().flatten().all(|d| is_date(d)) {
                return Err(bad(expected));
            }
            Match::Dates(from.map(str::to_owned), to.map(str::to_owned))
        }
        Text | PersonName => {
            if value.chars().count() > MAX_TEXT {
                return Err(bad("at most 256 characters long"));
            }
            Match::Pattern {
                pattern: value.to_owned(),
                fold: attribute.kind == PersonName,
            }
        }
    }))
}

fn number(name: &str, value: &str) -> Result<usize, QueryError> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| value.parse().ok())
        .flatten()
        .filter(|n| *n <= MAX_NUMBER)
        .ok_or_else(|| QueryError::BadValue {
            name: name.to_owned(),
            expected: "a whole number up to 1000000000",
        })
}

fn boolean(name: &str, value: &str) -> Result<bool, QueryError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(QueryError::BadValue {
            name: name.to_owned(),
            expected: "true or false",
        }),
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Study => "studies",
        Series => "series",
        Instance => "instances",
    }
}

/// `name` cut to [`MAX_SHOWN`] characters.
fn shown(name: &str) -> String {
    match name.char_indices().nth(MAX_SHOWN) {
        None => name.to_owned(),
        Some((at, _)) => format!("{}…", &name[..at]),
    }
}

fn is_date(text: &str) -> bool {
    text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Digits and dots with no empty component, as a UID is (a longer one than a UID may be
/// just matches nothing).
fn is_uid_like(text: &str) -> bool {
    text.split('.')
        .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// The longest text value a search matches with.
pub const MAX_TEXT: usize = 256;

/// The pattern of a list of UIDs in a query, for API descriptions.
pub const UID_LIST_PATTERN: &str = r"^(\*|[0-9]+(\.[0-9]+)*([,\\][0-9]+(\.[0-9]+)*)*)?$";

/// The pattern of a date or date range in a query, for API descriptions.
pub const DATE_PATTERN: &str = r"^(\*|[0-9]{8}|[0-9]{8}-|-[0-9]{8}|[0-9]{8}-[0-9]{8})?$";

/// The pattern of `includefield`, for API descriptions: `all`, tags and known keywords,
/// comma-separated.
pub fn includefield_pattern() -> String {
    let keywords: Vec<&str> = ATTRIBUTES.iter().map(|a| a.keyword).collect();
    let field = format!("(all|[0-9A-Fa-f]{{8}}|{})", keywords.join("|"));
    format!("^{field}(,{field})*$")
}

/// Whether `value` matches `pattern`, where `*` is any run of characters and `?` any one.
fn wildcard(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // Greedy with backtracking to the last star: linear in practice, never exponential.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < v.len() {
        if i < p.len() && (p[i] == '?' || p[i] == v[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(level: Level, pairs: &[(&str, &str)]) -> Result<Query, QueryError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        parse(level, &pairs)
    }

    fn filter(q: &Query) -> &Match {
        &q.filters[0].1
    }

    #[test]
    fn wildcards_match_runs_and_single_characters() {
        for (pattern, value, expected) in [
            ("doe*", "doe^john", true),
            ("*john", "doe^john", true),
            ("d?e*", "doe^john", true),
            ("d?e", "doe^john", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("exact", "exact", true),
        ] {
            assert_eq!(wildcard(pattern, value), expected, "{pattern} {value}");
        }
    }

    #[test]
    fn person_names_fold_case_and_ids_do_not() {
        let q = query(Study, &[("PatientName", "DOE*")]).unwrap();
        assert!(filter(&q).matches(&["Doe^John"]));
        let q = query(Study, &[("00100020", "abc")]).unwrap();
        assert_eq!(q.filters[0].0.keyword, "PatientID");
        assert!(!filter(&q).matches(&["ABC"]));
        assert!(filter(&q).matches(&["abc"]));
    }

    #[test]
    fn date_ranges_may_be_open() {
        let m = |v| filter(&query(Study, &[("StudyDate", v)]).unwrap()).clone();
        assert!(m("20200101-20201231").matches(&["20200615"]));
        assert!(!m("20200101-20201231").matches(&["20210101"]));
        assert!(m("-20201231").matches(&["19991231"]));
        assert!(m("20200101-").matches(&["20990101"]));
        assert!(m("20200615").matches(&["20200615"]));
        assert!(!m("20200615").matches(&[""]));
        for bad in ["2020", "-", "20200101-2020", "x"] {
            assert!(query(Study, &[("StudyDate", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn uid_lists_take_commas_or_backslashes() {
        let q = query(Study, &[("StudyInstanceUID", "1.2,1.3\\1.4")]).unwrap();
        assert!(filter(&q).matches(&["1.4"]));
        assert!(!filter(&q).matches(&["1.5"]));
        assert!(query(Study, &[("StudyInstanceUID", "1.2,x")]).is_err());
        assert!(query(Study, &[("StudyInstanceUID", "1..2")]).is_err());
    }

    #[test]
    fn multi_valued_attributes_match_any_value() {
        let q = query(Study, &[("ModalitiesInStudy", "SEG")]).unwrap();
        assert!(filter(&q).matches(&["CT", "SEG", "SR"]));
        assert!(!filter(&q).matches(&["CT"]));
    }

    #[test]
    fn paging_and_includefield() {
        let q = query(
            Series,
            &[
                ("limit", "5"),
                ("offset", "2"),
                ("includefield", "PatientID,00081030"),
                ("includefield", "00191010"),
            ],
        )
        .unwrap();
        assert_eq!((q.limit, q.offset), (5, 2));
        assert!(q.include.includes("00100020"));
        assert!(q.include.includes("00081030"));
        assert!(q.include.includes("00191010"));
        let q = query(Series, &[("includefield", "all")]).unwrap();
        assert!(q.include.includes("00100010"));
        assert_eq!(
            query(Study, &[("limit", "99999")]).unwrap().limit,
            MAX_LIMIT
        );
        for bad in ["-1", "+1", "", "1000000001", "99999999999999999999999"] {
            assert!(query(Study, &[("limit", bad)]).is_err(), "{bad}");
        }
        for bad in ["", "PatientID,", " PatientID"] {
            assert!(query(Study, &[("includefield", bad)]).is_err(), "{bad:?}");
        }
        assert!(query(Study, &[("includefield", "NoSuchKeyword")]).is_err());
    }

    #[test]
    fn refusals_name_the_parameter_but_never_echo_much() {
        let long = "X".repeat(100_000);
        let err = query(Study, &[(long.as_str(), "1")])
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{}", err.len());
        let err = query(Study, &[("Modality", "CT")]).unwrap_err().to_string();
        assert!(err.contains("Modality") && err.contains("studies"), "{err}");
        let err = query(Study, &[("PatientID", "a"), ("PatientID", "b")]).unwrap_err();
        assert_eq!(err, QueryError::Repeated("PatientID".into()));
        let err = query(Instance, &[("PatientID", &long)])
            .unwrap_err()
            .to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn empty_and_universal_values_match_everything() {
        let q = query(Instance, &[("PatientID", ""), ("Modality", "*")]).unwrap();
        assert!(q.filters.is_empty());
    }
}
