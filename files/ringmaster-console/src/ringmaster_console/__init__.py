"""The ringmaster fleet console: an agent next to each circusd, and a web app that reads them."""
