//! Flow-control limits through the [`Client`]: set, list and delete the
//! [`Limit`]s the store applies for every worker that shares it.

use offload_store::{LimitDeleteParams, LimitPutParams, LimitRecord};
use offload_types::{Limit, LimitScope};

use crate::{Client, Result};

impl Client {
    /// Stores `limit`, replacing the one with the same scope and target.
    /// Every worker sharing the store applies it within
    /// [`LIMIT_CACHE_TTL`](offload_store::LIMIT_CACHE_TTL).
    ///
    /// ```no_run
    /// # async fn demo(client: offload::Client) -> offload::Result<()> {
    /// use offload::Limit;
    /// // the email provider allows 10 calls a second; one import per customer at a time
    /// client.set_limit(Limit::name("send_email").rate("10/s".parse()?)).await?;
    /// client.set_limit(Limit::name("import").per_key("customer_id", 1)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_limit(&self, limit: Limit) -> Result<LimitRecord> {
        limit.validate()?;
        Ok(self
            .store()
            .limit_put(&LimitPutParams {
                limit,
                now: self.now(),
            })
            .await?)
    }

    /// Every stored limit.
    pub async fn limits(&self) -> Result<Vec<LimitRecord>> {
        Ok(self.store().limit_list().await?)
    }

    /// Deletes the limit of `scope` and `target`; `false` if there was none.
    pub async fn delete_limit(&self, scope: LimitScope, target: &str) -> Result<bool> {
        Ok(self
            .store()
            .limit_delete(&LimitDeleteParams {
                scope,
                target: target.to_owned(),
            })
            .await?)
    }
}
