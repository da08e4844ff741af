"""adclick: ad click event aggregation on one Apache Beam DAG, streamed or replayed."""

from setuptools import find_packages, setup

setup(
    name="adclick",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipelines*", "transforms*", "sources*", "sinks*", "runners*", "benchmarks*",
                                    "loadgen*", "serving*"]),
    package_data={"serving": ["static/*"]},
    install_requires=[
        "apache-beam==2.77.0",
        "fastavro==1.13.1",
        "pyarrow==25.0.1",
        "msgspec==0.22.0",
        "orjson==3.13.0",
        "numpy==2.4.6",
        "pycountry==26.2.16",
    ],
    extras_require={
        "gcp": ["apache-beam[gcp]==2.77.0", "google-cloud-bigtable==2.50.2"],
        "kafka": ["confluent-kafka==2.16.1"],
        "serve": ["fastapi==0.163.2", "uvicorn==0.54.0", "uvloop==0.23.0", "httptools==0.9.0",
                  "prometheus-client==0.26.0"],
        "dev": [
            "pytest==9.2.0", "pytest-timeout==2.4.0", "hypothesis==6.170.17", "schemathesis==4.32.5",
            "playwright==1.65.2", "httpx==0.28.1", "duckdb==2.0.0", "psutil==7.2.2", "pyinstrument==5.1.3",
            "ruff==0.17.6", "mypy==2.4.1",
        ],
    },
    entry_points={"console_scripts": ["adclick=runners.cli:main"]},
)
