# Every cluster and membership has an account from now on (0005 gave existing rows the default one).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("console", "0005_default_account")]

    operations = [
        migrations.AlterField(
            model_name="cluster",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT, related_name="clusters", to="console.account"
            ),
        ),
        migrations.AlterField(
            model_name="membership",
            name="account",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to="console.account"
            ),
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.UniqueConstraint(
                fields=("user", "account"), name="membership_one_per_user_and_account"
            ),
        ),
    ]
