//! DICOMweb protocol for pulmo, without a server: whether a STOW-RS request's content
//! type is one pulmo takes and its `multipart/related` body read part by part within
//! pulmo's limits ([`stow`]); QIDO-RS query parameters and matching rules ([`qido`]);
//! content negotiation and `multipart/related` answers for WADO-RS ([`accept`]).
//!
//! This crate knows media types, multipart framing and matching rules. It does not know
//! HTTP servers (the root's axum handlers hand it the body as a stream of chunks), disks
//! (the caller writes each part where it likes) or DICOM files (each part's bytes go to
//! the service's admission). It links no libtorch, so the fuzz targets in `tests/fuzz`
//! build against it ([`fuzz`]).

pub mod accept;
pub mod fuzz;
pub mod qido;
pub mod stow;

pub use stow::{boundary, ContentTypeError, DicomPart, Limits, Part, Parts, ReadError};
