//! The clouds: each metadata protocol imds-tun speaks, one folder each.
//!
//! - [`ec2`]: the EC2 instance metadata service (`/latest/...`), the catch-all.
//! - [`gce`]: the GCE metadata server (`/computeMetadata/v1/...`), with `--gcp-project`.
//! - [`azure`]: the Azure Instance Metadata Service (`/metadata/...`), always on.

pub mod azure;
pub mod ec2;
pub mod gce;
pub mod token_cache;
