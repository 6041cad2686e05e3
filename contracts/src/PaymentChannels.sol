// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title One-way payment channels for btp-nips-node.
/// @notice Every channel lives in this one contract. The payer deposits ETH for a payee;
/// the payee is paid by EIP-712 balance proofs the payer signs off chain. Each proof
/// carries the cumulative amount owed so far, and its domain binds it to this chain id and
/// this contract, so a proof is worthless anywhere else.
///
/// Windows (never overlapping): before `expiry` only the payee acts (claim, close);
/// from `expiry` on only the payer acts (reclaim). State changes before funds move.
contract PaymentChannels is EIP712 {
    struct Channel {
        address payer;
        address payee;
        /// Total deposited (open + top-ups).
        uint256 deposit;
        /// Cumulative amount already paid out to the payee.
        uint256 claimed;
        /// Unix time from which the payee can no longer act and the payer may reclaim.
        uint64 expiry;
        bool closed;
    }

    bytes32 public constant BALANCE_PROOF_TYPEHASH =
        keccak256("BalanceProof(bytes32 channelId,uint256 cumulativeAmount)");

    /// @notice Channels by id. An id is assigned here, on chain, and never reused.
    mapping(bytes32 => Channel) public channels;
    /// @notice Opens so far per payer: the salt of the payer's next channel id.
    mapping(address => uint256) public openCount;
    /// @notice Funds each payer has locked in channels not yet closed (deposits less payouts).
    mapping(address => uint256) public lockedBy;
    /// @dev Every channel a payer opened to a payee, oldest first.
    mapping(address => mapping(address => bytes32[])) private channelIds;

    event ChannelOpened(
        bytes32 indexed channelId, address indexed payer, address indexed payee, uint256 deposit, uint64 expiry
    );
    event ChannelToppedUp(bytes32 indexed channelId, uint256 added, uint256 deposit);
    event ChannelClaimed(bytes32 indexed channelId, uint256 cumulativeAmount, uint256 paid);
    event ChannelClosed(bytes32 indexed channelId, uint256 cumulativeAmount, uint256 paidToPayee, uint256 refunded);
    event ChannelExpired(bytes32 indexed channelId, uint256 refunded);

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

    constructor() EIP712("BtpNipsPaymentChannels", "1") {}

    /// @notice Opens a channel from the sender to `payee` holding `msg.value` until `expiry`.
    /// @return channelId keccak256(payer, payee, the payer's open count): unique per open.
    function open(address payee, uint64 expiry) external payable returns (bytes32 channelId) {
        if (msg.value == 0) revert ZeroDeposit();
        if (payee == address(0) || payee == msg.sender) revert InvalidPayee();
        if (expiry <= block.timestamp) revert ExpiryNotInFuture();
        uint256 salt = openCount[msg.sender]++;
        channelId = keccak256(abi.encode(msg.sender, payee, salt));
        // The salt never repeats, so neither does the id; checked anyway.
        if (channels[channelId].payer != address(0)) revert UnknownChannel();
        channels[channelId] = Channel(msg.sender, payee, msg.value, 0, expiry, false);
        lockedBy[msg.sender] += msg.value;
        channelIds[msg.sender][payee].push(channelId);
        emit ChannelOpened(channelId, msg.sender, payee, msg.value, expiry);
    }

    /// @notice Adds `msg.value` to an open channel; only its payer, only before expiry.
    function topUp(bytes32 channelId) external payable {
        Channel storage c = _live(channelId);
        if (msg.sender != c.payer) revert NotPayer();
        if (msg.value == 0) revert ZeroDeposit();
        if (block.timestamp >= c.expiry) revert ChannelExpiredAlready();
        c.deposit += msg.value;
        lockedBy[c.payer] += msg.value;
        emit ChannelToppedUp(channelId, msg.value, c.deposit);
    }

    /// @notice The payee takes what a newer proof owes it and keeps the channel open.
    function claim(bytes32 channelId, uint256 cumulativeAmount, bytes calldata signature) external {
        Channel storage c = _payeeWindow(channelId);
        uint256 paid = _accept(channelId, c, cumulativeAmount, signature);
        emit ChannelClaimed(channelId, cumulativeAmount, paid);
        _send(c.payee, paid);
    }

    /// @notice The payee closes with its highest proof (or with none: `cumulativeAmount` equal
    /// to what it already claimed and an empty signature); the rest returns to the payer.
    function close(bytes32 channelId, uint256 cumulativeAmount, bytes calldata signature) external {
        Channel storage c = _payeeWindow(channelId);
        uint256 paid = 0;
        if (cumulativeAmount != c.claimed || signature.length != 0) {
            paid = _accept(channelId, c, cumulativeAmount, signature);
        }
        uint256 refunded = c.deposit - c.claimed;
        c.closed = true;
        lockedBy[c.payer] -= refunded;
        emit ChannelClosed(channelId, c.claimed, paid, refunded);
        _send(c.payee, paid);
        _send(c.payer, refunded);
    }

    /// @notice After expiry the payer takes back whatever the payee did not claim.
    function reclaim(bytes32 channelId) external {
        Channel storage c = _live(channelId);
        if (msg.sender != c.payer) revert NotPayer();
        if (block.timestamp < c.expiry) revert ChannelNotExpired();
        uint256 refunded = c.deposit - c.claimed;
        c.closed = true;
        lockedBy[c.payer] -= refunded;
        emit ChannelExpired(channelId, refunded);
        _send(c.payer, refunded);
    }

    /// @notice Every channel `payer` opened to `payee`, oldest first (open or not).
    function channelsBetween(address payer, address payee) external view returns (bytes32[] memory) {
        return channelIds[payer][payee];
    }

    /// @notice The EIP-712 digest the payer signs for a balance proof.
    function balanceProofDigest(bytes32 channelId, uint256 cumulativeAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(BALANCE_PROOF_TYPEHASH, channelId, cumulativeAmount)));
    }

    /// @notice This contract's EIP-712 domain separator (chain id and address included).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _live(bytes32 channelId) private view returns (Channel storage c) {
        c = channels[channelId];
        if (c.payer == address(0)) revert UnknownChannel();
        if (c.closed) revert ChannelIsClosed();
    }

    function _payeeWindow(bytes32 channelId) private view returns (Channel storage c) {
        c = _live(channelId);
        if (msg.sender != c.payee) revert NotPayee();
        if (block.timestamp >= c.expiry) revert ChannelExpiredAlready();
    }

    /// Checks a proof and records it; returns what is newly owed.
    function _accept(bytes32 channelId, Channel storage c, uint256 cumulativeAmount, bytes calldata signature)
        private
        returns (uint256 paid)
    {
        if (cumulativeAmount > c.deposit) revert AmountExceedsDeposit();
        if (cumulativeAmount <= c.claimed) revert AmountNotAboveClaimed();
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(balanceProofDigest(channelId, cumulativeAmount), signature);
        if (err != ECDSA.RecoverError.NoError || signer != c.payer) revert BadSignature();
        paid = cumulativeAmount - c.claimed;
        c.claimed = cumulativeAmount;
        lockedBy[c.payer] -= paid;
    }

    function _send(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
