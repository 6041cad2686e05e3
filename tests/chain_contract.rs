//! The PaymentChannels contract on a real local chain (anvil, blocks mined on demand):
//! each test proves one guarantee of the contract, through alloy, as the node uses it.

mod support;

use alloy::eips::BlockId;
use alloy::primitives::{keccak256, Address, Bytes, B256, U256};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolError, SolEvent, SolValue};
use btp_nips_node::chain::contract::{self, sign_balance_proof, PaymentChannels as PC};
use support::chain::{Anvil, CHAIN_ID, ETH};

alloy::sol! {
    /// contracts/test/ReentrantPayee.sol: a payee that claims again while being paid.
    interface ReentrantPayee {
        function claimOnce(bytes32 channelId, uint256 amount, bytes signature) external;
        function payments() external view returns (uint256);
        function reentered() external view returns (bool);
        function reentryError() external view returns (bytes);
    }
}

/// The test contract's artifact, compiled and checked like the real one.
const REENTRANT_PAYEE_JSON: &str = include_str!("../contracts/artifacts/test/ReentrantPayee.json");

/// A chain with the contract deployed, a payer and a payee (fresh keys, funded).
struct Fixture {
    anvil: Anvil,
    contract: Address,
    payer: PrivateKeySigner,
    payee: PrivateKeySigner,
}

impl Fixture {
    async fn new() -> Fixture {
        let anvil = Anvil::start();
        let deployer = anvil.funded_key(10).await;
        let contract = anvil.deploy(&deployer).await;
        let payer = anvil.funded_key(100).await;
        let payee = anvil.funded_key(10).await;
        Fixture {
            anvil,
            contract,
            payer,
            payee,
        }
    }

    /// Opens a channel from the payer to the payee; returns its id and expiry.
    async fn open(&self, deposit: u128, lifetime: u64) -> (B256, u64) {
        let (_, now) = self.anvil.head().await;
        let expiry = now + lifetime;
        let receipt = self
            .anvil
            .transact(
                &self.payer,
                self.contract,
                U256::from(deposit),
                PC::openCall {
                    payee: self.payee.address(),
                    expiry,
                },
            )
            .await;
        assert!(receipt.status(), "open succeeds");
        (opened(&receipt)[0].channelId, expiry)
    }

    fn proof(&self, signer: &PrivateKeySigner, id: B256, amount: u128) -> Bytes {
        sign_balance_proof(signer, CHAIN_ID, self.contract, id, U256::from(amount)).expect("signs")
    }

    async fn channel(&self, id: B256) -> PC::channelsReturn {
        self.anvil
            .view(self.contract, PC::channelsCall { channelId: id })
            .await
    }

    /// The error `call` from `from` is refused with, replayed at the latest block.
    async fn refusal<C: SolCall>(&self, from: &PrivateKeySigner, call: &C) -> Option<[u8; 4]> {
        self.anvil
            .revert_selector(
                from.address(),
                self.contract,
                U256::ZERO,
                call,
                BlockId::latest(),
            )
            .await
    }

    /// Sends `call` from `from`, mines it and asserts it failed on chain with error `E`.
    async fn assert_refused<C: SolCall + Clone, E: SolError>(
        &self,
        from: &PrivateKeySigner,
        call: C,
    ) {
        assert_eq!(
            self.refusal(from, &call).await,
            Some(E::SELECTOR),
            "{} refused with {}",
            C::SIGNATURE,
            E::SIGNATURE
        );
        let receipt = self
            .anvil
            .transact(from, self.contract, U256::ZERO, call)
            .await;
        assert!(!receipt.status(), "the transaction reverts on chain too");
    }
}

fn opened(receipt: &TransactionReceipt) -> Vec<PC::ChannelOpened> {
    events(receipt)
}

fn events<E: SolEvent>(receipt: &TransactionReceipt) -> Vec<E> {
    receipt
        .logs()
        .iter()
        .filter_map(|log| E::decode_log(&log.inner).ok().map(|l| l.data))
        .collect()
}

/// What a transaction cost its sender in gas.
fn gas_cost(receipt: &TransactionReceipt) -> U256 {
    U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price)
}

#[test]
fn the_rust_bindings_match_the_compiled_abi() {
    let mut ours: Vec<String> = Vec::new();
    macro_rules! f {
        ($($t:ty),*) => { $( ours.push(format!("function {}", <$t as SolCall>::SIGNATURE)); )* };
    }
    macro_rules! e {
        ($($t:ty),*) => { $( ours.push(format!("event {}", <$t as SolEvent>::SIGNATURE)); )* };
    }
    macro_rules! r {
        ($($t:ty),*) => { $( ours.push(format!("error {}", <$t as SolError>::SIGNATURE)); )* };
    }
    f!(
        PC::BALANCE_PROOF_TYPEHASHCall,
        PC::channelsCall,
        PC::openCountCall,
        PC::lockedByCall,
        PC::openCall,
        PC::topUpCall,
        PC::claimCall,
        PC::closeCall,
        PC::reclaimCall,
        PC::channelsBetweenCall,
        PC::balanceProofDigestCall,
        PC::domainSeparatorCall,
        PC::eip712DomainCall
    );
    e!(
        PC::ChannelOpened,
        PC::ChannelToppedUp,
        PC::ChannelClaimed,
        PC::ChannelClosed,
        PC::ChannelExpired,
        PC::EIP712DomainChanged
    );
    r!(
        PC::ZeroDeposit,
        PC::InvalidPayee,
        PC::ExpiryNotInFuture,
        PC::UnknownChannel,
        PC::ChannelIsClosed,
        PC::NotPayer,
        PC::NotPayee,
        PC::ChannelExpiredAlready,
        PC::ChannelNotExpired,
        PC::AmountExceedsDeposit,
        PC::AmountNotAboveClaimed,
        PC::BadSignature,
        PC::TransferFailed,
        PC::InvalidShortString,
        PC::StringTooLong
    );
    ours.sort();
    assert_eq!(ours, contract::artifact_signatures().expect("artifact ABI"));
}

#[tokio::test]
async fn channel_ids_are_computed_on_chain_unique_even_in_one_block() {
    let f = Fixture::new().await;
    let (_, now) = f.anvil.head().await;
    let open = PC::openCall {
        payee: f.payee.address(),
        expiry: now + 3600,
    };
    // Two opens by the same payer to the same payee in the same block.
    let first = f
        .anvil
        .send(
            &f.payer,
            Some(f.contract),
            U256::from(ETH),
            open.abi_encode(),
        )
        .await;
    let second = f
        .anvil
        .send(
            &f.payer,
            Some(f.contract),
            U256::from(2 * ETH),
            open.abi_encode(),
        )
        .await;
    f.anvil.mine(1).await;
    let (r1, r2) = (f.anvil.receipt(first).await, f.anvil.receipt(second).await);
    assert_eq!(r1.block_number, r2.block_number, "same block");
    let (id1, id2) = (opened(&r1)[0].channelId, opened(&r2)[0].channelId);
    assert_ne!(id1, id2);
    // The id is the payer, payee and the payer's open count: nobody can pick it.
    for (salt, id) in [(0u64, id1), (1, id2)] {
        let expected =
            keccak256((f.payer.address(), f.payee.address(), U256::from(salt)).abi_encode());
        assert_eq!(id, expected);
    }
    let listed = f
        .anvil
        .view(
            f.contract,
            PC::channelsBetweenCall {
                payer: f.payer.address(),
                payee: f.payee.address(),
            },
        )
        .await;
    assert_eq!(listed, vec![id1, id2]);
    let locked = f
        .anvil
        .view(
            f.contract,
            PC::lockedByCall {
                payer: f.payer.address(),
            },
        )
        .await;
    assert_eq!(locked, U256::from(3 * ETH));
    let c = f.channel(id2).await;
    assert_eq!((c.payer, c.payee), (f.payer.address(), f.payee.address()));
    assert_eq!(c.deposit, U256::from(2 * ETH));
    // Bad opens are refused, each with its reason.
    for payee in [f.payer.address(), Address::ZERO] {
        assert_eq!(
            f.anvil
                .revert_selector(
                    f.payer.address(),
                    f.contract,
                    U256::from(1),
                    &PC::openCall {
                        payee,
                        expiry: now + 3600,
                    },
                    BlockId::latest(),
                )
                .await,
            Some(PC::InvalidPayee::SELECTOR),
            "a channel to oneself or to nobody"
        );
    }
    assert_eq!(
        f.anvil
            .revert_selector(
                f.payer.address(),
                f.contract,
                U256::from(1),
                &PC::openCall {
                    payee: f.payee.address(),
                    expiry: now.saturating_sub(1),
                },
                BlockId::latest(),
            )
            .await,
        Some(PC::ExpiryNotInFuture::SELECTOR)
    );
    assert_eq!(
        f.refusal(&f.payer, &open).await,
        Some(PC::ZeroDeposit::SELECTOR),
        "an open without a deposit"
    );
}

#[tokio::test]
async fn only_the_payer_tops_up_and_the_deposit_grows() {
    let f = Fixture::new().await;
    let (id, _) = f.open(ETH, 3600).await;
    let receipt = f
        .anvil
        .transact(
            &f.payer,
            f.contract,
            U256::from(ETH / 2),
            PC::topUpCall { channelId: id },
        )
        .await;
    assert!(receipt.status());
    let topped: Vec<PC::ChannelToppedUp> = events(&receipt);
    assert_eq!(topped[0].added, U256::from(ETH / 2));
    assert_eq!(topped[0].deposit, U256::from(ETH + ETH / 2));
    assert_eq!(f.channel(id).await.deposit, U256::from(ETH + ETH / 2));
    assert_eq!(
        f.anvil
            .revert_selector(
                f.payee.address(),
                f.contract,
                U256::from(1),
                &PC::topUpCall { channelId: id },
                BlockId::latest(),
            )
            .await,
        Some(PC::NotPayer::SELECTOR)
    );
}

#[tokio::test]
async fn the_payee_closes_with_a_valid_proof_and_the_rest_returns_to_the_payer() {
    let f = Fixture::new().await;
    let deposit = 3 * ETH;
    let (id, _) = f.open(deposit, 3600).await;
    let owed = ETH + 12345;
    let payer_before = f.anvil.balance(f.payer.address()).await;
    let payee_before = f.anvil.balance(f.payee.address()).await;
    let receipt = f
        .anvil
        .transact(
            &f.payee,
            f.contract,
            U256::ZERO,
            PC::closeCall {
                channelId: id,
                cumulativeAmount: U256::from(owed),
                signature: f.proof(&f.payer, id, owed),
            },
        )
        .await;
    assert!(receipt.status(), "a valid proof closes the channel");
    let closed: Vec<PC::ChannelClosed> = events(&receipt);
    assert_eq!(closed[0].cumulativeAmount, U256::from(owed));
    assert_eq!(closed[0].paidToPayee, U256::from(owed));
    assert_eq!(closed[0].refunded, U256::from(deposit - owed));
    assert_eq!(
        f.anvil.balance(f.payee.address()).await,
        payee_before + U256::from(owed) - gas_cost(&receipt)
    );
    assert_eq!(
        f.anvil.balance(f.payer.address()).await,
        payer_before + U256::from(deposit - owed)
    );
    assert_eq!(f.anvil.balance(f.contract).await, U256::ZERO);
    let c = f.channel(id).await;
    assert!(c.closed);
    assert_eq!(c.claimed, U256::from(owed));
    // Closed is final: the same proof, or a higher one, does nothing more.
    f.assert_refused::<_, PC::ChannelIsClosed>(
        &f.payee,
        PC::closeCall {
            channelId: id,
            cumulativeAmount: U256::from(owed + 1),
            signature: f.proof(&f.payer, id, owed + 1),
        },
    )
    .await;
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let f = Fixture::new().await;
    let (id, _) = f.open(ETH, 3600).await;
    let stranger = PrivateKeySigner::random();
    // Signed by someone other than the payer (here: the payee itself).
    for signer in [&stranger, &f.payee] {
        f.assert_refused::<_, PC::BadSignature>(
            &f.payee,
            PC::claimCall {
                channelId: id,
                cumulativeAmount: U256::from(100),
                signature: f.proof(signer, id, 100),
            },
        )
        .await;
    }
    // The payer's signature over another amount.
    f.assert_refused::<_, PC::BadSignature>(
        &f.payee,
        PC::claimCall {
            channelId: id,
            cumulativeAmount: U256::from(101),
            signature: f.proof(&f.payer, id, 100),
        },
    )
    .await;
    // Not a signature at all.
    f.assert_refused::<_, PC::BadSignature>(
        &f.payee,
        PC::claimCall {
            channelId: id,
            cumulativeAmount: U256::from(100),
            signature: Bytes::from(vec![7u8; 12]),
        },
    )
    .await;
    // Only the payee may present proofs.
    f.assert_refused::<_, PC::NotPayee>(
        &stranger_funded(&f).await,
        PC::claimCall {
            channelId: id,
            cumulativeAmount: U256::from(100),
            signature: f.proof(&f.payer, id, 100),
        },
    )
    .await;
    assert_eq!(f.channel(id).await.claimed, U256::ZERO, "nothing was paid");
}

async fn stranger_funded(f: &Fixture) -> PrivateKeySigner {
    f.anvil.funded_key(1).await
}

#[tokio::test]
async fn a_proof_for_another_chain_id_or_contract_is_refused() {
    let f = Fixture::new().await;
    let other_contract = f.anvil.deploy(&f.payee).await;
    let (id, _) = f.open(ETH, 3600).await;
    let amount = U256::from(500);
    let for_other_chain =
        sign_balance_proof(&f.payer, CHAIN_ID + 1, f.contract, id, amount).expect("signs");
    let for_other_contract =
        sign_balance_proof(&f.payer, CHAIN_ID, other_contract, id, amount).expect("signs");
    for signature in [for_other_chain, for_other_contract] {
        f.assert_refused::<_, PC::BadSignature>(
            &f.payee,
            PC::claimCall {
                channelId: id,
                cumulativeAmount: amount,
                signature,
            },
        )
        .await;
    }
    // The same proof bound to this chain and this contract is accepted: the digest the
    // node signs is the one the contract checks.
    let digest = f
        .anvil
        .view(
            f.contract,
            PC::balanceProofDigestCall {
                channelId: id,
                cumulativeAmount: amount,
            },
        )
        .await;
    let ours = alloy::sol_types::SolStruct::eip712_signing_hash(
        &contract::BalanceProof {
            channelId: id,
            cumulativeAmount: amount,
        },
        &contract::domain(CHAIN_ID, f.contract),
    );
    assert_eq!(digest, ours);
    let receipt = f
        .anvil
        .transact(
            &f.payee,
            f.contract,
            U256::ZERO,
            PC::claimCall {
                channelId: id,
                cumulativeAmount: amount,
                signature: f.proof(&f.payer, id, 500),
            },
        )
        .await;
    assert!(receipt.status());
    let claimed: Vec<PC::ChannelClaimed> = events(&receipt);
    assert_eq!(claimed[0].paid, amount);
}

#[tokio::test]
async fn an_amount_not_above_what_was_claimed_or_above_the_deposit_is_refused() {
    let f = Fixture::new().await;
    let (id, _) = f.open(1000, 3600).await;
    let claim = |amount: u128, signed: u128| PC::claimCall {
        channelId: id,
        cumulativeAmount: U256::from(amount),
        signature: f.proof(&f.payer, id, signed),
    };
    let receipt = f
        .anvil
        .transact(&f.payee, f.contract, U256::ZERO, claim(500, 500))
        .await;
    assert!(receipt.status());
    // An older (lower) proof, and the same proof replayed.
    f.assert_refused::<_, PC::AmountNotAboveClaimed>(&f.payee, claim(300, 300))
        .await;
    f.assert_refused::<_, PC::AmountNotAboveClaimed>(&f.payee, claim(500, 500))
        .await;
    f.assert_refused::<_, PC::AmountNotAboveClaimed>(
        &f.payee,
        PC::closeCall {
            channelId: id,
            cumulativeAmount: U256::from(300),
            signature: f.proof(&f.payer, id, 300),
        },
    )
    .await;
    f.assert_refused::<_, PC::AmountExceedsDeposit>(&f.payee, claim(1001, 1001))
        .await;
    // A newer proof pays only the difference.
    let receipt = f
        .anvil
        .transact(&f.payee, f.contract, U256::ZERO, claim(800, 800))
        .await;
    let claimed: Vec<PC::ChannelClaimed> = events(&receipt);
    assert_eq!(claimed[0].paid, U256::from(300));
    let locked = f
        .anvil
        .view(
            f.contract,
            PC::lockedByCall {
                payer: f.payer.address(),
            },
        )
        .await;
    assert_eq!(locked, U256::from(200), "locked funds follow the payouts");
}

#[tokio::test]
async fn the_payee_window_ends_at_expiry_where_the_payers_begins() {
    let f = Fixture::new().await;
    let (id, expiry) = f.open(ETH, 1000).await;
    let close = PC::closeCall {
        channelId: id,
        cumulativeAmount: U256::from(7),
        signature: f.proof(&f.payer, id, 7),
    };
    // Before expiry: the payer cannot reclaim.
    f.assert_refused::<_, PC::ChannelNotExpired>(&f.payer, PC::reclaimCall { channelId: id })
        .await;
    // The last second before expiry still belongs to the payee (checked, not sent).
    f.anvil.mine_at(expiry - 1).await;
    let (number, _) = f.anvil.head().await;
    assert_eq!(
        f.anvil
            .revert_selector(
                f.payee.address(),
                f.contract,
                U256::ZERO,
                &close,
                BlockId::number(number),
            )
            .await,
        None,
        "the payee may close up to expiry"
    );
    // From expiry on: the payee can no longer close, the payer reclaims.
    f.anvil.mine_at(expiry).await;
    let tx = f
        .anvil
        .send(&f.payee, Some(f.contract), U256::ZERO, close.abi_encode())
        .await;
    f.anvil.mine(1).await;
    let receipt = f.anvil.receipt(tx).await;
    assert!(!receipt.status(), "a close after expiry fails on chain");
    assert_eq!(
        f.anvil
            .revert_selector(
                f.payee.address(),
                f.contract,
                U256::ZERO,
                &close,
                BlockId::number(receipt.block_number.expect("mined")),
            )
            .await,
        Some(PC::ChannelExpiredAlready::SELECTOR)
    );
    let payer_before = f.anvil.balance(f.payer.address()).await;
    let receipt = f
        .anvil
        .transact(
            &f.payer,
            f.contract,
            U256::ZERO,
            PC::reclaimCall { channelId: id },
        )
        .await;
    assert!(receipt.status(), "the payer reclaims after expiry");
    let expired: Vec<PC::ChannelExpired> = events(&receipt);
    assert_eq!(expired[0].refunded, U256::from(ETH));
    assert_eq!(
        f.anvil.balance(f.payer.address()).await,
        payer_before + U256::from(ETH) - gas_cost(&receipt)
    );
    assert!(f.channel(id).await.closed);
    f.assert_refused::<_, PC::ChannelIsClosed>(&f.payer, PC::reclaimCall { channelId: id })
        .await;
}

#[tokio::test]
async fn the_claim_is_recorded_before_the_payment_so_a_reentrant_claim_fails() {
    let f = Fixture::new().await;
    let artifact: serde_json::Value = serde_json::from_str(REENTRANT_PAYEE_JSON).unwrap();
    let mut code: Vec<u8> = artifact["bytecode"]
        .as_str()
        .unwrap()
        .parse::<Bytes>()
        .unwrap()
        .to_vec();
    code.extend(f.contract.abi_encode());
    let attacker = f.anvil.deploy_code(&f.payee, code).await;
    let (_, now) = f.anvil.head().await;
    let receipt = f
        .anvil
        .transact(
            &f.payer,
            f.contract,
            U256::from(1000),
            PC::openCall {
                payee: attacker,
                expiry: now + 3600,
            },
        )
        .await;
    let id = opened(&receipt)[0].channelId;
    let receipt = f
        .anvil
        .transact(
            &f.payee,
            attacker,
            U256::ZERO,
            ReentrantPayee::claimOnceCall {
                channelId: id,
                amount: U256::from(600),
                signature: f.proof(&f.payer, id, 600),
            },
        )
        .await;
    assert!(receipt.status(), "the outer claim succeeds");
    assert_eq!(
        f.anvil
            .view(attacker, ReentrantPayee::paymentsCall {})
            .await,
        U256::from(1),
        "paid once"
    );
    assert!(
        !f.anvil
            .view(attacker, ReentrantPayee::reenteredCall {})
            .await
    );
    let error = f
        .anvil
        .view(attacker, ReentrantPayee::reentryErrorCall {})
        .await;
    assert_eq!(
        error[..4],
        PC::AmountNotAboveClaimed::SELECTOR,
        "the claim was already recorded when the payment ran"
    );
    assert_eq!(f.anvil.balance(attacker).await, U256::from(600));
    assert_eq!(f.anvil.balance(f.contract).await, U256::from(400));
    assert_eq!(f.channel(id).await.claimed, U256::from(600));
}
