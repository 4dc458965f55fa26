//! A STOW-RS request body (PS3.18 10.5): `multipart/related; type="application/dicom"`,
//! read one part at a time with multer, with a limit on the whole body and on each part.

use bytes::Bytes;
use futures_util::Stream;

/// Why a request's content type is not one STOW-RS takes.
#[derive(Debug, thiserror::Error)]
pub enum ContentTypeError {
    #[error("content type {0:?} is not multipart/related; type=\"application/dicom\"")]
    Unsupported(String),
    #[error("the multipart content type has no boundary")]
    NoBoundary,
}

/// Why a body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the request is larger than {limit} bytes")]
    RequestTooLarge { limit: u64 },
    #[error("an instance is larger than {limit} bytes")]
    InstanceTooLarge { limit: u64 },
    /// Bad framing, or the body stream itself failed (a stalled upload, say).
    #[error("malformed multipart body")]
    Malformed(#[source] multer::Error),
}

impl From<multer::Error> for ReadError {
    fn from(err: multer::Error) -> Self {
        match err {
            multer::Error::StreamSizeExceeded { limit } => ReadError::RequestTooLarge { limit },
            multer::Error::FieldSizeExceeded { limit, .. } => ReadError::InstanceTooLarge { limit },
            other => ReadError::Malformed(other),
        }
    }
}

/// The boundary of a `multipart/related; type="application/dicom"` body, from the
/// request's Content-Type (an absent `type` parameter is taken as `application/dicom`).
pub fn boundary(content_type: &str) -> Result<String, ContentTypeError> {
    let unsupported = || ContentTypeError::Unsupported(content_type.to_owned());
    let mime: mime::Mime = content_type.parse().map_err(|_| unsupported())?;
    if mime.type_() != mime::MULTIPART || mime.subtype() != "related" {
        return Err(unsupported());
    }
    if let Some(kind) = mime.get_param("type") {
        if !kind.as_str().eq_ignore_ascii_case("application/dicom") {
            return Err(unsupported());
        }
    }
    mime.get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_owned())
        .ok_or(ContentTypeError::NoBoundary)
}

/// How large a body and each of its parts may be, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_request_bytes: u64,
    pub max_instance_bytes: u64,
}

/// The parts of one body, in order.
pub struct Parts {
    multipart: multer::Multipart<'static>,
}

/// One part of a body: an instance to store, or something else to refuse.
pub enum Part {
    Dicom(DicomPart),
    /// A part whose content type is not `application/dicom` (`None`: it names none).
    Other {
        content_type: Option<String>,
    },
}

/// An `application/dicom` part, read in chunks as they arrive.
pub struct DicomPart {
    // Boxed: a field is a few hundred bytes, and `Part` moves it around.
    field: Box<multer::Field<'static>>,
}

impl Parts {
    /// Reads the body `stream`, framed by `boundary`, within `limits`.
    pub fn new<S, O, E>(stream: S, boundary: String, limits: Limits) -> Self
    where
        S: Stream<Item = Result<O, E>> + Send + 'static,
        O: Into<Bytes> + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let constraints = multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .whole_stream(limits.max_request_bytes)
                .per_field(limits.max_instance_bytes),
        );
        let multipart = multer::Multipart::with_constraints(stream, boundary, constraints);
        Parts { multipart }
    }

    /// The next part, or `None` after the closing boundary.
    pub async fn next(&mut self) -> Result<Option<Part>, ReadError> {
        let Some(field) = self.multipart.next_field().await? else {
            return Ok(None);
        };
        if is_dicom(field.content_type()) {
            let field = Box::new(field);
            return Ok(Some(Part::Dicom(DicomPart { field })));
        }
        let content_type = field.content_type().map(|m| m.to_string());
        Ok(Some(Part::Other { content_type }))
    }
}

impl DicomPart {
    /// The next bytes of the part, or `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ReadError> {
        Ok(self.field.chunk().await?)
    }
}

fn is_dicom(content_type: Option<&mime::Mime>) -> bool {
    content_type.is_some_and(|m| m.essence_str().eq_ignore_ascii_case("application/dicom"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_multipart_related_dicom_is_taken() {
        let ok = boundary("multipart/related; type=\"application/dicom\"; boundary=abc");
        assert_eq!(ok.unwrap(), "abc");
        assert_eq!(boundary("multipart/related; boundary=abc").unwrap(), "abc");
        for wrong in [
            "application/dicom",
            "multipart/form-data; boundary=abc",
            "multipart/related; type=\"application/dicom+json\"; boundary=abc",
            "",
        ] {
            assert!(
                matches!(boundary(wrong), Err(ContentTypeError::Unsupported(_))),
                "{wrong}"
            );
        }
        assert!(matches!(
            boundary("multipart/related; type=\"application/dicom\""),
            Err(ContentTypeError::NoBoundary)
        ));
    }

    /// Every part of `body` (framed by `abc`) read whole: its length, or its content type.
    fn read(body: &'static [u8], limits: Limits) -> Result<Vec<String>, ReadError> {
        let chunks = body.chunks(5).map(Ok::<_, std::convert::Infallible>);
        let mut parts = Parts::new(futures_util::stream::iter(chunks), "abc".into(), limits);
        crate::fuzz::block_on(async {
            let mut found = Vec::new();
            while let Some(part) = parts.next().await? {
                found.push(match part {
                    Part::Dicom(mut part) => {
                        let mut len = 0;
                        while let Some(chunk) = part.chunk().await? {
                            len += chunk.len();
                        }
                        format!("{len} bytes")
                    }
                    Part::Other { content_type } => format!("{content_type:?}"),
                });
            }
            Ok(found)
        })
    }

    const BODY: &[u8] = b"--abc\r\nContent-Type: application/dicom\r\n\r\n0123456789\r\n\
        --abc\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
        --abc\r\nContent-ID: <3>\r\n\r\nx\r\n--abc--\r\n";

    const ROOMY: Limits = Limits {
        max_request_bytes: 1 << 20,
        max_instance_bytes: 1 << 20,
    };

    #[test]
    fn parts_are_read_in_order_with_their_kind() {
        assert_eq!(
            read(BODY, ROOMY).unwrap(),
            ["10 bytes", "Some(\"text/plain\")", "None"]
        );
    }

    #[test]
    fn a_part_or_a_body_over_its_limit_is_refused_with_the_limit() {
        let small_parts = Limits {
            max_instance_bytes: 9,
            ..ROOMY
        };
        let err = read(BODY, small_parts).unwrap_err();
        assert_eq!(err.to_string(), "an instance is larger than 9 bytes");
        let small_body = Limits {
            max_request_bytes: 40,
            ..ROOMY
        };
        let err = read(BODY, small_body).unwrap_err();
        assert_eq!(err.to_string(), "the request is larger than 40 bytes");
    }

    #[test]
    fn a_body_without_its_closing_boundary_is_malformed() {
        let err = read(b"--abc\r\nContent-Type: application/dicom\r\n\r\n01", ROOMY).unwrap_err();
        assert!(matches!(err, ReadError::Malformed(_)), "{err}");
    }
}
