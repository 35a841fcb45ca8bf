# The registry of live web processes (replicas) and what each one reported for a restart job.

import uuid

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0006_account_required"),
    ]

    operations = [
        migrations.AddField(
            model_name="restartjob",
            name="replicas",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.CreateModel(
            name="Replica",
            fields=[
                (
                    "id",
                    models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False),
                ),
                ("control_url", models.CharField(max_length=255)),
                ("host", models.CharField(max_length=255)),
                ("pid", models.PositiveIntegerField()),
                ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("seen_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ("host", "pid"),
                "indexes": [models.Index(fields=["seen_at"], name="replica_seen_at")],
            },
        ),
    ]
