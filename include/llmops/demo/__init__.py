"""Things the demo and the tests make for themselves, so nothing is fetched from a hub."""
