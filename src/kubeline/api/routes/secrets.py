"""``/api/v1/secrets``: write-only values. Names can be listed; a value is never returned."""

from __future__ import annotations

from typing import Annotated

import fastapi

from kubeline.api import access, deps, schemas
from kubeline.auth import roles
from kubeline.domain import specs

Role = roles.Role
router = fastapi.APIRouter(prefix="/secrets", tags=["secrets"])
SecretName = Annotated[str, fastapi.Path(pattern=specs.ENV_NAME_PATTERN, max_length=128,
                                         description="An environment variable name")]


@router.get("", response_model=schemas.SecretList, dependencies=[access.requires(Role.viewer)])
async def list_secrets(kl: deps.KL) -> schemas.SecretList:
    return schemas.SecretList(names=await kl.secrets.list())


@router.put("/{name}", status_code=204, responses=deps.problem_responses(422),
            dependencies=[access.requires(Role.admin)])
async def put_secret(name: SecretName, body: schemas.SecretIn, kl: deps.KL) -> fastapi.Response:
    """Store or replace a secret (encrypted with the server key); the value is never shown again."""
    await kl.secrets.set(name, body.value)
    return fastapi.Response(status_code=204)


@router.delete("/{name}", status_code=204, responses=deps.problem_responses(404, 422),
               dependencies=[access.requires(Role.admin)])
async def delete_secret(name: SecretName, kl: deps.KL) -> fastapi.Response:
    await kl.secrets.delete(name)
    return fastapi.Response(status_code=204)
