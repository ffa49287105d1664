"""`python -m services.llm`: settings → engine → bus → loop."""

from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from shared.runner import main_for


def main() -> None:
    """Run the LLM service."""
    main_for("llm", LlmSettings(), LlmService)


if __name__ == "__main__":
    main()
