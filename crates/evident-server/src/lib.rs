//! Evident's service: everything between the HTTP socket and the storage backend.
