//! How the world reaches the pipeline: the command line today, HTTP (DICOMweb) and DIMSE
//! as they land. Transports turn their protocol into pipeline calls and nothing more.

pub mod cli;
