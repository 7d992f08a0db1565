"""Real local stand-ins for tests and benchmarks: olah (Hugging Face mirror), SeaweedFS (S3), an OSS adapter.

Import as `support.<module>`: pytest puts `tests/` on sys.path (rootdir conftest, prepend import mode);
scripts outside pytest (bench/) insert it themselves.
"""
