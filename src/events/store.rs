//! The operator's relay as the event flow's [`OperatorStore`].

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use nostr::{Event, EventId, Filter};

use super::relay::{OperatorRelay, OperatorRelayError};
use super::{OperatorStore, StoreError, VerifiedEvent};

impl From<OperatorRelayError> for StoreError {
    fn from(e: OperatorRelayError) -> StoreError {
        match e {
            OperatorRelayError::Url { .. }
            | OperatorRelayError::Refused { .. }
            | OperatorRelayError::Closed { .. } => StoreError::Refused(e.to_string()),
            OperatorRelayError::Unavailable { .. } | OperatorRelayError::Lagged { .. } => {
                StoreError::Unavailable(e.to_string())
            }
        }
    }
}

#[async_trait]
impl OperatorStore for OperatorRelay {
    async fn publish(&self, event: &VerifiedEvent) -> Result<(), StoreError> {
        Ok(OperatorRelay::publish(self, event).await?)
    }

    async fn stored_ids(
        &self,
        filter: Filter,
        page_size: usize,
        max: usize,
    ) -> Result<(Vec<(u64, EventId)>, bool), StoreError> {
        let index = OperatorRelay::stored_index(self, filter, page_size, max).await?;
        Ok((index.ids, index.truncated))
    }

    async fn events(&self, ids: &[EventId]) -> Result<Vec<Event>, StoreError> {
        Ok(OperatorRelay::events_by_id(self, ids).await?)
    }

    async fn live(
        &self,
        filter: Filter,
    ) -> Result<BoxStream<'static, Result<Event, StoreError>>, StoreError> {
        let live = OperatorRelay::live(self, filter).await?;
        // The feed ends after its first error: a gap means the subscription must be asked
        // again (from the asker's cursor) rather than go on with a hole in it.
        let feed = stream::unfold(Some(live), |live| async move {
            let mut live = live?;
            match live.next().await? {
                Ok(event) => Some((Ok(event), Some(live))),
                Err(e) => Some((Err(StoreError::from(e)), None)),
            }
        });
        Ok(feed.boxed())
    }
}
