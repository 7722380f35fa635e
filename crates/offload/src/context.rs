//! [`Context`]: what a run can reach — the application's shared state,
//! a [`Client`] for other tasks, and who runs it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::Client;

/// Shared state registered once on the worker, keyed by type.
#[derive(Default)]
pub(crate) struct StateMap(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl StateMap {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }

    fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref::<T>()
    }
}

/// What a run can reach.
///
/// ```
/// # use offload::{Context, Controller, TaskError, TaskType};
/// struct Config { api_base: String }
/// struct Ping;
/// impl TaskType for Ping {
///     const NAME: &'static str = "ping";
///     type Input = ();
///     type Output = String;
///     async fn run(&self, _: (), ctx: &Context, _: &Controller) -> Result<String, TaskError> {
///         let config = ctx.state::<Config>().ok_or_else(|| TaskError::fatal("no Config registered"))?;
///         Ok(config.api_base.clone())
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Context {
    client: Client,
    state: Arc<StateMap>,
    worker_id: Arc<str>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(client: Client, state: Arc<StateMap>, worker_id: Arc<str>) -> Self {
        Self {
            client,
            state,
            worker_id,
        }
    }

    /// The shared value of type `T` registered with
    /// [`WorkerBuilder::state`](crate::WorkerBuilder::state), if any.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.state.get::<T>()
    }

    /// A client to trigger, query and await other tasks.
    pub fn tasks(&self) -> &Client {
        &self.client
    }

    /// The id of the worker running this attempt.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
}
