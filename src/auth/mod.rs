//! Projects and tokens (platform-free): a project's configuration (its signing secrets, first
//! signs and all verify), HS256 tokens with a scope, and the decision a request gets. Streams
//! live under `/v1/stream/<project>/<stream…>`; a project without configuration is open.

pub mod policy;
pub mod project;
pub mod token;
