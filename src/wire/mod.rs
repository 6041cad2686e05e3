//! Wire codecs the node speaks: OER primitives ([`oer`]), ILPv4 packets ([`ilp`]),
//! BTP/2.0 packets ([`btp`]) and BTP-NIPs packets ([`btp_nips`]). Decoding never panics,
//! never allocates what the input only claims, and names the field that was wrong.

pub mod btp;
pub mod btp_nips;
pub mod ilp;
pub mod oer;
