"""Device registry: cooperatives, gateways, sensor channels and their broker credentials."""
