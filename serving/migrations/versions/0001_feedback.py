"""Create the feedback table.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("ticket_id", sa.String(200), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(50)),
        sa.Column("score_request_id", sa.String(200)),
        sa.Column("operator_id", sa.String(200), nullable=False),
        sa.Column("suggested_category", sa.String(100)),
        sa.Column("suggested_root_cause", sa.String(200)),
        sa.Column("suggested_escalation", sa.Boolean),
        sa.Column("chosen_category", sa.String(100)),
        sa.Column("chosen_root_cause", sa.String(200)),
        sa.Column("chosen_escalation", sa.Boolean),
        sa.Column("accepted", sa.Boolean, nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("request_id", name="uq_feedback_request_id"),
    )
    op.create_index("ix_feedback_ticket_id", "feedback", ["ticket_id"])
    op.create_index("ix_feedback_recorded_at", "feedback", ["recorded_at"])


def downgrade() -> None:
    op.drop_table("feedback")
