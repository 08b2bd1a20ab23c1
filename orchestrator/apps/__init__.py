"""Code that runs on workers. Imports only the standard library and the scientific stack."""
