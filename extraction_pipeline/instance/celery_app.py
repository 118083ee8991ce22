"""The Celery app the workers run: `celery -A extraction_pipeline.instance.celery_app worker`.

Celery's -A needs a module-level app, so this module reads the environment (the same
EXTRACTION_CELERY_BROKER / EXTRACTION_CELERY_BACKEND / EXTRACTION_PG_URL as the launcher) when a
worker imports it; nothing else imports it."""

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from extraction_pipeline.instance.celery_workers import celery_app_args

app = make_app(celery_app_args())
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
