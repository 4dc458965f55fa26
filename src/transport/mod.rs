//! How the world reaches the pipeline: the command line, and HTTP (DICOMweb and pulmo's
//! API) through the service core; DIMSE as it lands. Transports turn their protocol into
//! pipeline or service calls and nothing more.

pub mod cli;
pub mod http;
