//! The host side of the dabba platform interfaces a guest may import beyond WASI 0.2:
//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch) and `wasi:config@0.2.0-rc.1`.
//!
//! Both are capabilities: a guest opens only the buckets its app was granted and reads
//! only the configuration its app was given. Bucket names are scoped by the host (an
//! app in namespace `shop` opening `default` gets `shop/default`), so apps in different
//! namespaces never share state by accident.
//!
//! `wasi:config` is a dozen lines here rather than the `wasmtime-wasi-config` crate:
//! that crate answers `get-all` from a `HashMap`, in an order that changes from process
//! to process; dabba answers in key order, so a guest sees its configuration the same
//! way on every host and every run.

use std::collections::BTreeMap;
use std::sync::Arc;

use dabba_spec::resources::ResourceKey;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::kv::{self, KvBackend, LIST_PAGE, Outcome, Write};

mod generated {
    wasmtime::component::bindgen!({
        path: "../spec/wit",
        world: "dabba:platform/platform",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::BucketHandle,
            "wasi:keyvalue/atomics.cas": super::CasHandle,
        },
    });
}

use generated::wasi::config::store as config;
use generated::wasi::keyvalue::{atomics, batch, store};

/// An open bucket, as the guest holds it.
pub struct BucketHandle {
    /// The scoped name the backend knows it by.
    scoped: String,
}

/// A compare-and-swap in progress: the value the key held when it began.
pub struct CasHandle {
    scoped: String,
    key: String,
    seen: Option<Vec<u8>>,
}

/// What an instance may use of the platform: set up per app, shared by its instances.
pub struct Grants {
    pub backend: Arc<dyn KvBackend>,
    /// Prefix that scopes bucket names, e.g. the namespace.
    pub scope: String,
    /// Buckets the app may open.
    pub buckets: Vec<String>,
    pub config: BTreeMap<String, String>,
}

/// The borrow of a store's state that the platform interfaces work through.
pub struct InterfacesView<'a> {
    pub grants: &'a Grants,
    pub table: &'a mut ResourceTable,
}

struct HasPlatform;

impl HasData for HasPlatform {
    type Data<'a> = InterfacesView<'a>;
}

/// Adds the platform interfaces to a linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> InterfacesView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasPlatform>(linker, get)?;
    atomics::add_to_linker::<T, HasPlatform>(linker, get)?;
    batch::add_to_linker::<T, HasPlatform>(linker, get)?;
    config::add_to_linker::<T, HasPlatform>(linker, get)?;
    Ok(())
}

fn kv_error(e: kv::KvError) -> store::Error {
    store::Error::Other(e.to_string())
}

impl InterfacesView<'_> {
    fn bucket(&self, b: &Resource<BucketHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(b)?.scoped.clone())
    }

    /// Sets (`Some`) or deletes (`None`) keys of a bucket in one atomic write.
    async fn put(
        &mut self,
        bucket: &Resource<BucketHandle>,
        pairs: Vec<(String, Option<Vec<u8>>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let b = self.bucket(bucket)?;
        Ok(self
            .grants
            .backend
            .write(&b, Write::Put(pairs))
            .await
            .map(|_| ())
            .map_err(kv_error))
    }
}

impl store::Host for InterfacesView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, store::Error>> {
        if !self.grants.buckets.contains(&identifier) {
            return Ok(Err(store::Error::AccessDenied));
        }
        let scoped = ResourceKey::new(&self.grants.scope, &identifier).to_string();
        Ok(Ok(self.table.push(BucketHandle { scoped })?))
    }
}

impl store::HostBucket for InterfacesView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        let b = self.bucket(&bucket)?;
        Ok(self.grants.backend.get(&b, &key).await.map_err(kv_error))
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        self.put(&bucket, vec![(key, Some(value))]).await
    }

    async fn delete(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        self.put(&bucket, vec![(key, None)]).await
    }

    async fn exists(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, store::Error>> {
        let b = self.bucket(&bucket)?;
        Ok(self
            .grants
            .backend
            .get(&b, &key)
            .await
            .map(|v| v.is_some())
            .map_err(kv_error))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<store::KeyResponse, store::Error>> {
        let b = self.bucket(&bucket)?;
        Ok(self
            .grants
            .backend
            .list_keys(&b, cursor.as_deref(), LIST_PAGE)
            .await
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(kv_error))
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for InterfacesView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, store::Error>> {
        let b = self.bucket(&bucket)?;
        Ok(
            match self
                .grants
                .backend
                .write(&b, Write::Increment { key, delta })
                .await
            {
                Ok(Outcome::Counter(n)) => Ok(n),
                Ok(other) => Err(store::Error::Other(format!("unexpected outcome {other:?}"))),
                Err(e) => Err(kv_error(e)),
            },
        )
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.delete(cas)?;
        let write = Write::Swap {
            key: handle.key.clone(),
            expected: handle.seen.clone(),
            value,
        };
        Ok(
            match self.grants.backend.write(&handle.scoped, write).await {
                Ok(Outcome::Swapped) => Ok(()),
                Ok(Outcome::Conflict(now)) => {
                    let newer = self.table.push(CasHandle {
                        scoped: handle.scoped,
                        key: handle.key,
                        seen: now,
                    })?;
                    Err(atomics::CasError::CasFailed(newer))
                }
                Ok(other) => Err(atomics::CasError::StoreError(store::Error::Other(format!(
                    "unexpected outcome {other:?}"
                )))),
                Err(e) => Err(atomics::CasError::StoreError(kv_error(e))),
            },
        )
    }
}

impl atomics::HostCas for InterfacesView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasHandle>, store::Error>> {
        let scoped = self.bucket(&bucket)?;
        let seen = match self.grants.backend.get(&scoped, &key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(kv_error(e))),
        };
        Ok(Ok(self.table.push(CasHandle { scoped, key, seen })?))
    }

    async fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.seen.clone()))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for InterfacesView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, store::Error>> {
        let b = self.bucket(&bucket)?;
        Ok(self
            .grants
            .backend
            .get_many(&b, &keys)
            .await
            .map(|values| keys.into_iter().zip(values).collect())
            .map_err(kv_error))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let pairs = key_values.into_iter().map(|(k, v)| (k, Some(v))).collect();
        self.put(&bucket, pairs).await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), store::Error>> {
        let pairs = keys.into_iter().map(|k| (k, None)).collect();
        self.put(&bucket, pairs).await
    }
}

impl config::Host for InterfacesView<'_> {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, config::Error>> {
        Ok(Ok(self.grants.config.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config::Error>> {
        Ok(Ok(self
            .grants
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}
