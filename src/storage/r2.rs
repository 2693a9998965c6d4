//! The cold tier in an R2 bucket (binding `SEGMENTS`): each object's segments under its own
//! prefix (`ds/` for streams, `ls/` for LiveStore stores, then the object's id), so two logs never
//! share a key.

use crate::storage::segments::ColdTier;
use crate::stream::StorageError;
use worker::Bucket;

/// The binding of the bucket that holds cold segments; without it streams stay whole in SQLite.
pub const SEGMENTS_BINDING: &str = "SEGMENTS";

/// One object's part of the bucket.
pub struct R2Cold {
    bucket: Bucket,
    prefix: String,
}

fn failed(what: &'static str) -> impl Fn(worker::Error) -> StorageError {
    move |e| StorageError(format!("R2 {what}: {e}"))
}

impl R2Cold {
    /// The part of `bucket` under `kind/object/`.
    pub fn new(bucket: Bucket, kind: &str, object: &str) -> R2Cold {
        R2Cold {
            bucket,
            prefix: format!("{kind}/{object}/"),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// How many objects this part holds (admin; at most `limit` counted).
    pub async fn count(&self, limit: u32) -> Result<usize, StorageError> {
        let listed = self
            .bucket
            .list()
            .prefix(self.prefix.clone())
            .limit(limit)
            .execute()
            .await
            .map_err(failed("list"))?;
        Ok(listed.objects().len())
    }
}

impl ColdTier for R2Cold {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.bucket
            .put(self.full(key), bytes)
            .execute()
            .await
            .map(|_| ())
            .map_err(failed("put"))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(object) = self
            .bucket
            .get(self.full(key))
            .execute()
            .await
            .map_err(failed("get"))?
        else {
            return Ok(None);
        };
        match object.body() {
            Some(body) => body.bytes().await.map(Some).map_err(failed("read")),
            None => Err(StorageError(format!("R2 object {key} has no body"))),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.bucket
            .delete(self.full(key))
            .await
            .map_err(failed("delete"))
    }
}
