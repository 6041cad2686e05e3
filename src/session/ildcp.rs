//! ILDCP (RFC 31): a neighbour asks `peer.config` for the address and asset it should use
//! with us. Request: a zero-amount Prepare to `peer.config` with the bilateral control
//! condition and empty data. Answer: a Fulfill whose data is the client address
//! (var-octets), the asset scale (`u8`) and the asset code (var-octets).

use crate::wire::ilp::{self, Address, Fulfill, Prepare, Timestamp};
use crate::wire::oer::{Reader, Writer};

/// The ILDCP destination.
pub const DESTINATION: &str = "peer.config";

/// What a node tells a neighbour about their bilateral account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IldcpInfo {
    pub client_address: Address,
    pub asset_scale: u8,
    pub asset_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IldcpError {
    #[error("ILDCP response: {0}")]
    Oer(#[from] crate::wire::oer::OerError),
    #[error("ILDCP response: client address: {0}")]
    Address(#[from] ilp::AddressError),
    #[error("ILDCP response: asset code: not UTF-8")]
    AssetCode,
}

/// The request Prepare, expiring at `expires_at`.
pub fn request(expires_at: Timestamp) -> Prepare {
    Prepare::peer_control(
        Address::new(DESTINATION).expect("peer.config is a valid address"),
        expires_at,
        Vec::new(),
    )
}

/// Whether a Prepare is an ILDCP request.
pub fn is_request(prepare: &Prepare) -> bool {
    prepare.destination.as_str() == DESTINATION
}

/// The Fulfill answering a request with `info`.
pub fn response(info: &IldcpInfo) -> Fulfill {
    let mut w = Writer::new();
    w.write_var_octets(info.client_address.as_str().as_bytes());
    w.write_u8(info.asset_scale);
    w.write_var_octets(info.asset_code.as_bytes());
    Fulfill::peer_control(w.into_inner())
}

/// Reads the data of a Fulfill answering a request.
pub fn parse_response(data: &[u8]) -> Result<IldcpInfo, IldcpError> {
    let mut r = Reader::new(data);
    let address = r.read_var_octets("client_address")?;
    let client_address = Address::from_bytes(address)?;
    let asset_scale = r.read_u8("asset_scale")?;
    let code = r.read_var_octets("asset_code")?;
    r.finish("asset_code")?;
    let asset_code = std::str::from_utf8(code)
        .map_err(|_| IldcpError::AssetCode)?
        .to_string();
    Ok(IldcpInfo {
        client_address,
        asset_scale,
        asset_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_round_trips_and_matches_the_rfc_layout() {
        let info = IldcpInfo {
            client_address: Address::new("g.btp-nips.node.child").unwrap(),
            asset_scale: 9,
            asset_code: "XRP".into(),
        };
        let fulfill = response(&info);
        assert_eq!(fulfill.fulfillment, ilp::PEER_PROTOCOL_FULFILLMENT);
        let mut expected = vec![21];
        expected.extend_from_slice(b"g.btp-nips.node.child");
        expected.extend_from_slice(&[9, 3]);
        expected.extend_from_slice(b"XRP");
        assert_eq!(fulfill.data, expected);
        assert_eq!(parse_response(&fulfill.data).unwrap(), info);
        assert!(parse_response(&expected[..5]).is_err());
        let mut bad = expected.clone();
        bad[1] = b'!';
        assert!(matches!(parse_response(&bad), Err(IldcpError::Address(_))));
    }
}
