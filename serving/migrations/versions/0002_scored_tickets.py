"""Create the scored-ticket log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scored_tickets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(200), nullable=False),
        sa.Column("ticket_id", sa.String(200)),
        sa.Column("scored_at", sa.DateTime, nullable=False),
        sa.Column("model_name", sa.String(200)),
        sa.Column("model_version", sa.String(50)),
        sa.Column("category", sa.String(100)),
        sa.Column("category_probability", sa.Float),
        sa.Column("root_cause", sa.String(200)),
        sa.Column("escalation_probability", sa.Float),
        sa.Column("needs_review", sa.Boolean),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("description", sa.Text),
    )
    op.create_index("ix_scored_tickets_request_id", "scored_tickets", ["request_id"])
    op.create_index("ix_scored_tickets_ticket_id", "scored_tickets", ["ticket_id"])
    op.create_index("ix_scored_tickets_scored_at", "scored_tickets", ["scored_at"])


def downgrade() -> None:
    op.drop_table("scored_tickets")
