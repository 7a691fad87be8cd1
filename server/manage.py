"""Managing tasks beyond submit and kill: change a task's priority.

A new priority applies to the task and to every job of it that no pilot has taken
yet (the claim orders by the job's own priority), in one transaction; jobs already
sent or running keep theirs. Production managers change any task, analysts their
own (``MANAGE`` and ``check_own_tasks``, as kill and reassign).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import select, update

from dawms.catalog.models import Job, Task
from dawms.catalog.states import JOB_QUEUED

from .auth import MANAGE, check_own_tasks
from .envelope import NotFound, ok
from .schemas import Envelope
from .tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["task"])


class TaskPriority(BaseModel):
    task_id: int = Field(ge=1, le=2**63 - 1)
    priority: int = Field(ge=-(2**31), le=2**31 - 1, description="higher runs first")


@router.post("/task/priority", response_model=Envelope)
def task_priority(body: TaskPriority, request: Request,
                  who: Principal = Depends(MANAGE)) -> dict[str, Any]:
    """Change a task's priority and that of its jobs not yet taken by a pilot."""
    with request.app.state.db.session() as s:
        check_own_tasks(s, who, [body.task_id])
        old = s.scalar(select(Task.priority).where(Task.id == body.task_id)
                       .with_for_update())
        if old is None:
            raise NotFound(f"no task {body.task_id}")
        s.execute(update(Task).where(Task.id == body.task_id)
                  .values(priority=body.priority, updated_at=datetime.now(UTC)))
        jobs = s.execute(update(Job).where(Job.task_id == body.task_id,
                                           Job.state.in_(list(JOB_QUEUED)))
                         .values(priority=body.priority)
                         .execution_options(synchronize_session=False)).rowcount
    return ok({"task_id": body.task_id, "priority": body.priority, "was": old,
               "jobs": jobs}, f"task {body.task_id}: priority {old} -> {body.priority}")
