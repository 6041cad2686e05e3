// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

interface IPaymentChannels {
    function claim(bytes32 channelId, uint256 cumulativeAmount, bytes calldata signature) external;
}

/// @notice Test only: a payee that, while being paid, presents the same proof again
/// (re-entrancy). The channel must already have recorded the claim, so the second one fails.
contract ReentrantPayee {
    IPaymentChannels public immutable channels;
    bytes32 private channelId;
    uint256 private amount;
    bytes private signature;
    /// How many payments arrived.
    uint256 public payments;
    /// Whether the re-entrant claim went through (it must not).
    bool public reentered;
    /// What the re-entrant claim reverted with.
    bytes public reentryError;

    constructor(IPaymentChannels channels_) {
        channels = channels_;
    }

    function claimOnce(bytes32 channelId_, uint256 amount_, bytes calldata signature_) external {
        channelId = channelId_;
        amount = amount_;
        signature = signature_;
        channels.claim(channelId_, amount_, signature_);
    }

    receive() external payable {
        payments++;
        if (payments == 1) {
            try channels.claim(channelId, amount, signature) {
                reentered = true;
            } catch (bytes memory err) {
                reentryError = err;
            }
        }
    }
}
