"""The master and its workers: binding, forking, signals, reload, shared state, pid file."""
