//! Test harness for the IQ-720 operator: local cluster access and helpers, plus the
//! local node agent (`iq720-localnode`) that runs pod containers as local processes.

pub mod localnode;
