"""Rate and connection limiting, and access rules: pure logic with an injected clock
(leaky, access, keys), and the zones every worker of an instance shares (table, zones).
Nothing here knows the server: the request phases of edgeproxy.server.limit_phases use it."""
