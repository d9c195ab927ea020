"""askdraw with a LangChain chat model as its LLM: ChatOpenAI on a local llama.cpp server.
Start one (see README "Scaling out"), then: python examples/chatopenai_llm.py http://127.0.0.1:8080/v1"""
import sys

from langchain_openai import ChatOpenAI

from agent import Agent

url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1"
llm = ChatOpenAI(base_url=url, api_key="none", model="smollm2-135m", temperature=0)
agent = Agent(llm=llm, image=False)  # any BaseChatModel works: ChatOllama, ChatHuggingFace, ...
for question in ("Who painted the Mona Lisa?", "What is 12 times 7?", "Write a haiku about rain."):
    result = agent.ask(text=question)
    print(f"{question}\n  route:  {result.route} ({result.route_reason})\n  answer: {result.answer}\n")
