"""Push an exported folder to the Hugging Face Hub (huggingface_hub create_repo + upload_folder)."""

from __future__ import annotations

import os
from pathlib import Path

from layershear.errors import HubError


def check_token(repo_id: str, token: str | None = None) -> str:
    """The Hub token (argument, HF_TOKEN or the saved login).

    Raises:
        HubError: there is none.
    """
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError(f"No Hugging Face token found to push to {repo_id!r}; run `hf auth login` or set HF_TOKEN")
    return token


def check_push(repo_id: str, token: str | None = None) -> str:
    """Everything a push can be refused for that is known before any work: a malformed repo id
    (``huggingface_hub.utils.validate_repo_id``), offline mode (``HF_HUB_OFFLINE``) and no token.

    Returns:
        The token.

    Raises:
        HubError: with the fix in the message.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        reason = str(e).strip().splitlines()[0]
        raise HubError(f"--push-to-hub {repo_id!r} is not a Hub repo id ({reason}); write it as user/name") from e
    # the constant is read when huggingface_hub is imported; the variable may have been set since
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        raise HubError(f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set; unset it (and check the network) or drop "
                       "--push-to-hub and push the folder later with `layershear push`")
    return check_token(repo_id, token)


def push_to_hub(folder: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "Upload pruned model (layershear)") -> str:
    """Create ``repo_id`` (if needed) and upload ``folder`` to it.

    Returns:
        The URL of the commit.

    Raises:
        HubError: a malformed repo id, offline mode, no token, network failure, or the Hub refused
            (one line, with the fix).
    """
    from huggingface_hub import HfApi

    token = check_push(repo_id, token)
    if not Path(folder, "config.json").is_file():
        raise HubError(f"{folder} is not an exported model folder (no config.json)")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=commit_message)
    except Exception as e:  # huggingface_hub raises HTTP, connection and validation errors alike
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HubError(f"Could not push to {repo_id!r}: {reason}; the model stays in {folder}") from e
    return str(getattr(info, "commit_url", info))
