"""The HTTP API (``/v1``) and the settings page (``/ui/``): a producer, served by
``browser-sessions api``. It holds no key that decrypts."""
