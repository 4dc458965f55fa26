//! Content negotiation for DICOMweb answers (PS3.18 8.7): which of the media types a
//! route offers an `Accept` header takes, with the `type` and `transfer-syntax`
//! parameters of `multipart/related` taken into account. No match is a 406 for the caller.

/// A media type a route can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer<'a> {
    /// `type/subtype`, lowercase.
    pub essence: &'a str,
    /// The `type` parameter of a `multipart/related` answer.
    pub part_type: Option<&'a str>,
    /// The transfer syntax of the answer's bytes, when it has one.
    pub transfer_syntax: Option<&'a str>,
}

impl<'a> Offer<'a> {
    /// A single-part answer of `essence`.
    pub const fn single(essence: &'a str) -> Self {
        Offer {
            essence,
            part_type: None,
            transfer_syntax: None,
        }
    }

    /// A `multipart/related` answer whose parts are `part_type`.
    pub const fn multipart(part_type: &'a str) -> Self {
        Offer {
            essence: "multipart/related",
            part_type: Some(part_type),
            transfer_syntax: None,
        }
    }
}

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
struct Range {
    essence: String,
    part_type: Option<String>,
    transfer_syntax: Option<String>,
    q: f32,
}

/// The index in `offers` of the answer `accept` takes best (the first offer when the
/// header is absent or empty), or `None` when it takes none of them.
pub fn negotiate(accept: Option<&str>, offers: &[Offer<'_>]) -> Option<usize> {
    let ranges = accept.map(ranges).unwrap_or_default();
    if ranges.is_empty() {
        return (!offers.is_empty()).then_some(0);
    }
    let mut best: Option<(f32, usize)> = None;
    for range in ranges.iter().filter(|r| r.q > 0.0) {
        let Some(found) = offers.iter().position(|o| takes(range, o)) else {
            continue;
        };
        if best.is_none_or(|(q, _)| range.q > q) {
            best = Some((range.q, found));
        }
    }
    best.map(|(_, found)| found)
}

fn takes(range: &Range, offer: &Offer<'_>) -> bool {
    let essence = match range.essence.split_once('/') {
        Some(("*", "*")) => true,
        Some((kind, "*")) => offer.essence.split('/').next() == Some(kind),
        _ => range.essence == offer.essence,
    };
    let part = match (&range.part_type, offer.part_type) {
        (None, _) => true,
        (Some(wanted), Some(offered)) => wanted == "*/*" || wanted == offered,
        (Some(_), None) => false,
    };
    let syntax = match (&range.transfer_syntax, offer.transfer_syntax) {
        (None, _) => true,
        (Some(wanted), _) if wanted == "*" => true,
        (Some(wanted), Some(offered)) => wanted == offered,
        (Some(_), None) => false,
    };
    essence && part && syntax
}

fn ranges(header: &str) -> Vec<Range> {
    split_outside_quotes(header, ',')
        .into_iter()
        .filter_map(|item| {
            let mut fields = split_outside_quotes(item, ';').into_iter();
            let essence = fields.next()?.trim().to_ascii_lowercase();
            let mut range = Range {
                essence,
                part_type: None,
                transfer_syntax: None,
                q: 1.0,
            };
            for field in fields {
                let Some((name, value)) = field.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "type" => range.part_type = Some(value.to_ascii_lowercase()),
                    "transfer-syntax" => range.transfer_syntax = Some(value.to_owned()),
                    "q" => range.q = value.parse().unwrap_or(0.0),
                    _ => {}
                }
            }
            (!range.essence.is_empty()).then_some(range)
        })
        .collect()
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (at, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&text[start..at]);
            start = at + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The head of one part of a `multipart/related` answer.
pub fn part_head(boundary: &str, content_type: &str, location: Option<&str>) -> String {
    let location = location.map_or(String::new(), |l| format!("Content-Location: {l}\r\n"));
    format!("--{boundary}\r\nContent-Type: {content_type}\r\n{location}\r\n")
}

/// What follows a part's bytes: the line break, and when `last`, the closing delimiter.
pub fn part_tail(boundary: &str, last: bool) -> String {
    if last {
        format!("\r\n--{boundary}--\r\n")
    } else {
        "\r\n".to_owned()
    }
}

/// The Content-Type of a `multipart/related` answer whose parts are `part_type`.
pub fn multipart_type(boundary: &str, part_type: &str) -> String {
    format!("multipart/related; type=\"{part_type}\"; boundary={boundary}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DICOM: Offer<'static> = Offer::multipart("application/dicom");
    const BARE: Offer<'static> = Offer::single("application/dicom");

    #[test]
    fn no_accept_takes_the_first_offer() {
        assert_eq!(negotiate(None, &[DICOM, BARE]), Some(0));
        assert_eq!(negotiate(Some(""), &[DICOM, BARE]), Some(0));
    }

    #[test]
    fn the_type_parameter_chooses_among_multiparts() {
        let octets = Offer::multipart("application/octet-stream");
        let accept = r#"multipart/related; type="application/octet-stream"; transfer-syntax=*"#;
        assert_eq!(negotiate(Some(accept), &[DICOM, octets]), Some(1));
        assert_eq!(
            negotiate(Some("application/dicom"), &[DICOM, BARE]),
            Some(1)
        );
        assert_eq!(negotiate(Some("*/*"), &[DICOM, BARE]), Some(0));
        assert_eq!(negotiate(Some("image/png"), &[DICOM, BARE]), None);
        assert_eq!(
            negotiate(
                Some("application/json;q=0"),
                &[Offer::single("application/json")]
            ),
            None
        );
    }

    #[test]
    fn quality_decides_and_syntaxes_must_agree() {
        let png = Offer::single("image/png");
        let jpeg = Offer::single("image/jpeg");
        assert_eq!(
            negotiate(Some("image/png;q=0.5, image/jpeg"), &[png, jpeg]),
            Some(1)
        );
        let jls = Offer {
            transfer_syntax: Some("1.2.840.10008.1.2.4.80"),
            ..Offer::multipart("image/jls")
        };
        let wanted =
            r#"multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80"#;
        assert_eq!(negotiate(Some(wanted), &[jls]), Some(0));
        let other = r#"multipart/related; type="image/jls"; transfer-syntax=1.2.3"#;
        assert_eq!(negotiate(Some(other), &[jls]), None);
    }

    #[test]
    fn parts_are_framed_by_the_boundary() {
        let mut body = part_head("b", "application/dicom", None);
        body += "x";
        body += &part_tail("b", true);
        assert_eq!(
            body,
            "--b\r\nContent-Type: application/dicom\r\n\r\nx\r\n--b--\r\n"
        );
    }
}
