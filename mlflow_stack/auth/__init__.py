"""Bearer-token and basic authentication for MLflow's basic-auth app.

``hook.authenticate`` is the ``authorization_function`` named in auth_config.ini;
``tokens`` is the store API the CLI uses to create, list and revoke personal access
tokens. This package module stays empty on purpose: MLflow imports the hook into every
server worker, and nothing here should cost anything at import time.
"""
