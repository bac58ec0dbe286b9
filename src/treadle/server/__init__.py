"""The platform server: REST API, auth, and `treadle up`."""
