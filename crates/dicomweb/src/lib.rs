//! DICOMweb request bodies, before anything is stored: whether a STOW-RS request's
//! content type is one pulmo takes, and its `multipart/related` body read part by part
//! within pulmo's limits ([`stow`]).
//!
//! This crate knows media types and multipart framing. It does not know HTTP servers (the
//! root's axum handlers hand it the body as a stream of chunks), disks (the caller writes
//! each part where it likes) or DICOM (each part's bytes go to the service's admission).
//! It links no libtorch, so the fuzz targets in `tests/fuzz` build against it ([`fuzz`]).

pub mod fuzz;
pub mod stow;

pub use stow::{boundary, ContentTypeError, DicomPart, Limits, Part, Parts, ReadError};
