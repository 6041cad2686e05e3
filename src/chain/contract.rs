//! The payment-channel contract as Rust sees it: its calls and events (`sol!` bindings
//! written to match `contracts/src/PaymentChannels.sol`; a test checks them against the
//! compiled ABI), its bytecode from the committed artifact, and EIP-712 balance proofs.

use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol;
use alloy::sol_types::{eip712_domain, Eip712Domain, SolStruct};

/// The artifact `contracts/compile.js` writes (ABI + bytecode), compiled into the binary.
pub const ARTIFACT_JSON: &str = include_str!("../../contracts/artifacts/PaymentChannels.json");

sol! {
    /// The contract's external interface.
    interface PaymentChannels {
        event ChannelOpened(bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 deposit, uint64 expiry);
        event ChannelToppedUp(bytes32 indexed channelId, uint256 added, uint256 deposit);
        event ChannelClaimed(bytes32 indexed channelId, uint256 cumulativeAmount, uint256 paid);
        event ChannelClosed(bytes32 indexed channelId, uint256 cumulativeAmount, uint256 paidToPayee, uint256 refunded);
        event ChannelExpired(bytes32 indexed channelId, uint256 refunded);
        /// From OpenZeppelin's EIP712 (ERC-5267).
        event EIP712DomainChanged();

        error ZeroDeposit();
        error InvalidPayee();
        error ExpiryNotInFuture();
        error UnknownChannel();
        error ChannelIsClosed();
        error NotPayer();
        error NotPayee();
        error ChannelExpiredAlready();
        error ChannelNotExpired();
        error AmountExceedsDeposit();
        error AmountNotAboveClaimed();
        error BadSignature();
        error TransferFailed();
        /// From OpenZeppelin's ShortStrings (the EIP-712 name and version).
        error InvalidShortString();
        error StringTooLong(string str);

        function BALANCE_PROOF_TYPEHASH() external view returns (bytes32);
        function channels(bytes32 channelId) external view returns (address payer, address payee, uint256 deposit, uint256 claimed, uint64 expiry, bool closed);
        function openCount(address payer) external view returns (uint256);
        function lockedBy(address payer) external view returns (uint256);
        function open(address payee, uint64 expiry) external payable returns (bytes32 channelId);
        function topUp(bytes32 channelId) external payable;
        function claim(bytes32 channelId, uint256 cumulativeAmount, bytes signature) external;
        function close(bytes32 channelId, uint256 cumulativeAmount, bytes signature) external;
        function reclaim(bytes32 channelId) external;
        function channelsBetween(address payer, address payee) external view returns (bytes32[] memory);
        function balanceProofDigest(bytes32 channelId, uint256 cumulativeAmount) external view returns (bytes32);
        function domainSeparator() external view returns (bytes32);
        /// ERC-5267: the EIP-712 domain, as wallets read it.
        function eip712Domain() external view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions);
    }

    /// What the payer signs: the cumulative amount owed on a channel.
    struct BalanceProof {
        bytes32 channelId;
        uint256 cumulativeAmount;
    }
}

/// The EIP-712 domain name and version the contract's constructor sets.
pub const DOMAIN_NAME: &str = "BtpNipsPaymentChannels";
pub const DOMAIN_VERSION: &str = "1";

/// The domain a proof is bound to: this chain and this contract.
pub fn domain(chain_id: u64, contract: Address) -> Eip712Domain {
    eip712_domain! {
        name: DOMAIN_NAME,
        version: DOMAIN_VERSION,
        chain_id: chain_id,
        verifying_contract: contract,
    }
}

/// The payer's signature (65 bytes, r‖s‖v) over a balance proof for `chain_id`/`contract`.
pub fn sign_balance_proof(
    payer: &PrivateKeySigner,
    chain_id: u64,
    contract: Address,
    channel_id: B256,
    cumulative_amount: U256,
) -> Result<Bytes, alloy::signers::Error> {
    let proof = BalanceProof {
        channelId: channel_id,
        cumulativeAmount: cumulative_amount,
    };
    let hash = proof.eip712_signing_hash(&domain(chain_id, contract));
    let signature = payer.sign_hash_sync(&hash)?;
    Ok(Bytes::from(signature.as_bytes().to_vec()))
}

/// A field of the artifact is missing or malformed (the artifact is committed, so this is
/// a build defect, reported rather than panicking).
#[derive(Debug, thiserror::Error)]
#[error("contract artifact: {0}")]
pub struct ArtifactError(String);

fn artifact_field(field: &str) -> Result<serde_json::Value, ArtifactError> {
    let artifact: serde_json::Value =
        serde_json::from_str(ARTIFACT_JSON).map_err(|e| ArtifactError(format!("not JSON: {e}")))?;
    artifact
        .get(field)
        .cloned()
        .ok_or_else(|| ArtifactError(format!("no `{field}`")))
}

fn artifact_hex(field: &str) -> Result<Bytes, ArtifactError> {
    let value = artifact_field(field)?;
    let text = value
        .as_str()
        .ok_or_else(|| ArtifactError(format!("`{field}` is not a string")))?;
    text.parse::<Bytes>()
        .map_err(|e| ArtifactError(format!("`{field}` is not hex: {e}")))
}

/// The creation bytecode (what a deployment sends).
pub fn creation_bytecode() -> Result<Bytes, ArtifactError> {
    artifact_hex("bytecode")
}

/// The runtime bytecode (what `eth_getCode` returns at a deployed contract).
pub fn runtime_bytecode() -> Result<Bytes, ArtifactError> {
    artifact_hex("deployedBytecode")
}

/// The compiled ABI's functions, events and errors as `name(type,…)` signatures, sorted.
pub fn artifact_signatures() -> Result<Vec<String>, ArtifactError> {
    let abi = artifact_field("abi")?;
    let entries = abi
        .as_array()
        .ok_or_else(|| ArtifactError("`abi` is not an array".into()))?;
    let mut out = Vec::new();
    for entry in entries {
        let kind = entry["type"].as_str().unwrap_or_default();
        if !matches!(kind, "function" | "event" | "error") {
            continue;
        }
        let name = entry["name"].as_str().unwrap_or_default();
        let inputs: Vec<&str> = entry["inputs"]
            .as_array()
            .map(|inputs| {
                inputs
                    .iter()
                    .map(|i| i["type"].as_str().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        out.push(format!("{kind} {name}({})", inputs.join(",")));
    }
    out.sort();
    Ok(out)
}
