//! SQL over the live views and history (DataFusion). Not built yet: the views it will read live in `queries`.
