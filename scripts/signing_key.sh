# Sourced by the demo and `make ui`: signed lineage on this machine. Creates an ECDSA P-256 key pair once under
# $LLMOPS_HOME/signing (the private key mode 0600) and registers the private key as Connection llmops_signing
# (AIRFLOW_CONN_LLMOPS_SIGNING: Airflow reads it; the step factory hands it to the publish step only, and no job
# inherits AIRFLOW_* variables). Public key: $LLMOPS_HOME/signing/llmops-signing.pub, for deployments.yaml
# (`signing.public_keys: [$LLMOPS_HOME/signing/llmops-signing.pub]`) and `python -m llmops verify --public-key`.
# A Connection already configured (e.g. by the environment) is kept.
if [[ -z "${AIRFLOW_CONN_LLMOPS_SIGNING:-}" ]]; then
  "$LLMOPS_HOME/venvs/airflow/bin/python" -m llmops keygen "$LLMOPS_HOME/signing" >/dev/null
  AIRFLOW_CONN_LLMOPS_SIGNING="$("$LLMOPS_HOME/venvs/airflow/bin/python" -c '
import json, sys
print(json.dumps({"conn_type": "generic", "description": "llmops: signs published manifests",
                  "password": open(sys.argv[1]).read()}))' "$LLMOPS_HOME/signing/llmops-signing.pem")"
  export AIRFLOW_CONN_LLMOPS_SIGNING
fi
